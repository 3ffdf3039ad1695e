"""mlx_mobilemoe.evaluate on a tiny random model: perplexity and choice scoring against plain
log-softmax references, task files, the built-in generators and the CLI."""

import json
import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from conftest import CORPUS, add_tokenizer
from mlx_mobilemoe import evaluate as E
from mlx_mobilemoe.checkpoint import load, save
from mlx_mobilemoe.config import preset
from mlx_mobilemoe.model import Model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer_dir):
    mx.random.seed(0)
    d = tmp_path_factory.mktemp("tiny-eval")
    save(Model(preset("tiny")), None, d)
    add_tokenizer(d, tokenizer_dir)
    model, tok = load(d)
    return d, model, tok


def _logprobs(model, ids):
    lp = nn.log_softmax(model(mx.array([ids[:-1]])).astype(mx.float32), axis=-1)[0]
    return np.array(lp)


def test_perplexity_matches_plain_log_softmax(tiny):
    _, model, _ = tiny
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 320, 53)
    r = E.perplexity(model, toks, seq_len=16, batch=2)
    nll = 0.0
    for s in range(0, 52, 16):  # each window from its own start, tail partial
        seg = toks[s:s + 17]
        lp = _logprobs(model, [int(t) for t in seg])
        nll -= sum(lp[i, seg[i + 1]] for i in range(len(seg) - 1))
    assert r["tokens"] == 52
    assert r["loss"] == pytest.approx(nll / 52, rel=1e-5)
    assert r["ppl"] == pytest.approx(math.exp(nll / 52), rel=1e-5)
    assert E.perplexity(model, toks, 16, 2, max_tokens=20)["tokens"] == 20


def test_choice_logliks_match_reference(tiny):
    _, model, tok = tiny
    ctx, choices = "First Citizen:", [" Before we", " Speak, speak."]
    got = E.choice_logliks(model, tok, ctx, choices)
    n = len(tok.encode(ctx, add_special_tokens=False))
    for g, c in zip(got, choices):
        ids = tok.encode(ctx + c, add_special_tokens=False)
        assert ids[:n] == tok.encode(ctx, add_special_tokens=False)
        lp = _logprobs(model, ids)
        assert g == pytest.approx(sum(lp[i - 1, ids[i]] for i in range(n, len(ids))), rel=1e-5)


def test_task_files(tiny, tmp_path):
    _, model, tok = tiny
    mc = tmp_path / "mine.jsonl"
    mc.write_text("\n".join(json.dumps({"context": "All:", "choices": [" Speak", " zz"],
                                        "answer": i % 2}) for i in range(4)) + "\n")
    r = E.run_mc(model, tok, E.read_task(mc))
    assert r["n"] == 4 and r["acc"] == 0.5 and r["chance"] == 0.5
    em = tmp_path / "em.jsonl"
    em.write_text(json.dumps({"prompt": "1 + 1 =", "answer": "2"}) + "\n")
    r = E.run_em(model, tok, E.read_task(em), max_new=3)
    assert r["n"] == 1 and r["acc"] in (0.0, 1.0) and len(r["examples"]) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"context": "x", "choices": ["a"], "answer": 3}) + "\n")
    with pytest.raises(E.EvalError, match="choices"):
        E.read_task(bad)
    with pytest.raises(E.EvalError):
        E.read_task(tmp_path / "missing.jsonl")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpora")
    words = "the man of god went unto the land and did see a light upon the waters".split()
    rng = np.random.default_rng(0)
    (d / "kjv.txt").write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(400)))
    (d / "gcide.txt").write_text("".join(
        f"Word{i} \\Word{i}\\, n.\n   A definition number {i} of some thing.\n   "
        "[1913 Webster]\n\n" for i in range(300)))
    (d / "python-stdlib.txt").write_text("".join(
        f"def f{i}(x):\n    return x * {i} + some_function_name(x)\n" for i in range(300)))
    (d / "tinyshakespeare.txt").write_text(CORPUS)
    return d


def test_builtin_tasks_are_seeded_and_well_formed(corpora):
    for name in E.BUILTIN:
        a = E.builtin_task(name, corpora, n=6, seed=1)
        b = E.builtin_task(name, corpora, n=6, seed=1)
        assert a.rows == b.rows and len(a.rows) == 6
        for r in a.rows:
            if a.kind == "mc":
                assert len(set(r["choices"])) == 4 and 0 <= r["answer"] < 4
            else:
                assert str(eval(r["prompt"].rstrip("=").replace("/", "//"))) == r["answer"]
    with pytest.raises(E.EvalError, match="missing"):
        E.builtin_task("verse", corpora / "nowhere")


def test_heldout_docs_is_the_training_split(tmp_path):
    from mlx_mobilemoe.train.data import split_bytes

    f = tmp_path / "t.txt"
    f.write_text("".join(f"line {i}\n" for i in range(200)))
    assert E.heldout_docs(f, 0.05) == [split_bytes(f.read_bytes(), 0.05)[1].decode()]
    assert E.heldout_docs(f, 0) == [f.read_text()]


def test_lm_eval_missing_is_a_clear_error(tiny):
    pytest.importorskip("mlx_lm")
    try:
        import lm_eval  # noqa: F401
        pytest.skip("lm-eval is installed")
    except ImportError:
        pass
    _, model, tok = tiny
    with pytest.raises(E.EvalError, match="pip install lm-eval"):
        E.run_lm_eval(model, tok, ["hellaswag"])


def test_cli(tiny, corpora, tmp_path, capsys):
    d, _, _ = tiny
    out = tmp_path / "r.json"
    assert E.main(["--model", str(d), "--tasks", "ppl", "arithmetic", "verse",
                   "--data-dir", str(corpora), "--data", str(corpora / "kjv.txt"),
                   str(corpora / "tinyshakespeare.txt"), "--max-tokens", "64",
                   "--seq-len", "32", "--limit", "3", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["perplexity"]) == {"kjv", "tinyshakespeare", "overall"}
    assert r["perplexity"]["kjv"]["tokens"] == 64
    assert set(r["tasks"]) == {"arithmetic", "verse"}
    assert "| verse (n=3) | acc |" in capsys.readouterr().out
    assert E.main(["--model", str(d), "--tasks", "ppl", "--data", str(tmp_path / "no")]) == 2
