"""Training: stages from the CLI, exact resume, SFT masking, dispatch, balancing, LoRA, NaN."""

import json
import math
import random

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_mobilemoe import checkpoint, preset
from mlx_mobilemoe.model import Model, quantize_model
from mlx_mobilemoe.train import make_config
from mlx_mobilemoe.train import data as D
from mlx_mobilemoe.train.__main__ import main
from mlx_mobilemoe.train.lora import LoRAExpertLinear, apply_lora, fuse_lora
from mlx_mobilemoe.train.loop import Trainer, TrainingError
from mlx_mobilemoe.moe import MoEOptions
from mlx_mobilemoe.train.moe import balance_biases

STATS = MoEOptions("dropless", stats=True)

TINY = ["seq_len=16", "batch_size=4", "grad_accum=1", "eval_every=0", "save_every=0",
        "log_every=100", "eval_batches=2", "warmup=2", "lr=3e-3", "tokenizer={vocab_size: 300}"]


def _words(seed, n):
    rng = random.Random(seed)
    syll = ["ro", "me", "o", "ju", "li", "et", "thou", "art", "the", "king", "lord", "sweet"]
    lines = []
    for _ in range(n):
        who = rng.choice(["ROMEO", "JULIET", "KING"])
        text = " ".join("".join(rng.choice(syll) for _ in range(rng.randint(1, 3)))
                        for _ in range(rng.randint(3, 9)))
        lines.append(f"{who}:\n{text.capitalize()}.\n")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    (d / "plays.txt").write_text(_words(0, 300))
    (d / "more.txt").write_text(_words(1, 200))
    conv = []
    for i in range(12):
        conv.append({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"{2 * i}."},
            {"role": "user", "content": "And times two?"},
            {"role": "assistant", "content": f"It is {4 * i}."}]})
    (d / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in conv))
    return d


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):
    """A tiny model pre-trained from the CLI (shared by the later stages)."""
    out = tmp_path_factory.mktemp("runs") / "pre"
    assert main(["configs/pretrain.yaml", "model=tiny", f"data={corpus / 'plays.txt'}",
                 f"out={out}", "steps=4", f"cache_dir={corpus / 'cache'}", *TINY]) == 0
    return out


def _losses(out):
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "loss" in r and "eval" not in r]


def test_pretrain_cli_writes_loadable_checkpoint(pretrained):
    model, tok = checkpoint.load(pretrained)
    assert model.args.vocab_size == tok.vocab_size
    assert "chat_template" not in json.loads((pretrained / "tokenizer_config.json").read_text())
    rec = [json.loads(r) for r in (pretrained / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rec if "load" in r]
    assert len(steps) == 4
    for key in ("loss", "tok_per_s", "load", "load_max_over_mean", "dropped_frac", "router_z",
                "lr", "grad_norm"):
        assert key in steps[0]
    assert np.array(steps[0]["load"]).shape == (2, 8)
    assert "overall" in json.loads((pretrained / "eval.json").read_text())


def test_resume_reproduces_uninterrupted_run(corpus, tmp_path):
    common = ["configs/pretrain.yaml", "model=tiny", f"data={corpus / 'plays.txt'}", "steps=6",
              f"cache_dir={corpus / 'cache'}", "grad_accum=2", *TINY]
    assert main([*common, f"out={tmp_path / 'full'}"]) == 0
    assert main([*common, f"out={tmp_path / 'cut'}", "stop_after=3"]) == 0
    assert len(_losses(tmp_path / "cut")) == 3
    assert main([*common, f"out={tmp_path / 'cut'}", "--resume"]) == 0
    full, cut = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert len(full) == len(cut) == 6
    np.testing.assert_allclose(cut, full, rtol=0, atol=1e-5)


def test_midtrain_continues_with_longer_context(pretrained, corpus, tmp_path):
    out = tmp_path / "mid"
    assert main(["configs/midtrain.yaml", f"model={pretrained}", "steps=2",
                 f"data={{{corpus / 'more.txt'}: 1.0}}", f"out={out}", "seq_len=32",
                 "batch_size=2", "grad_accum=1", f"cache_dir={tmp_path / 'cache'}",
                 "eval_batches=1"]) == 0
    assert checkpoint.load_model(out).args.vocab_size == 300
    assert len(_losses(out)) == 2


def test_sft_cli_and_mask_covers_assistant_tokens_only(pretrained, corpus, tmp_path):
    out = tmp_path / "sft"
    assert main(["configs/sft.yaml", f"model={pretrained}", f"data={corpus / 'chat.jsonl'}",
                 f"out={out}", "steps=2", "seq_len=64", "batch_size=2", "eval_batches=1"]) == 0
    tc = json.loads((out / "tokenizer_config.json").read_text())
    assert "chat_template" in tc
    cfg = json.loads((out / "config.json").read_text())
    assert isinstance(cfg["eos_token_id"], list) and len(cfg["eos_token_id"]) == 2

    tok = D.hf_tokenizer(out)
    msgs = json.loads((corpus / "chat.jsonl").read_text().splitlines()[3])["messages"]
    toks, mask = D.encode_chat(tok, tc["chat_template"], msgs,
                               {"bos_token": "<|begin_of_text|>"})
    trained = tok.decode(toks[mask > 0].tolist(), skip_special_tokens=False)
    assert trained == "6.<|eot_id|>It is 12.<|eot_id|>"

    # Perturbing the targets of every non-assistant position leaves the loss unchanged.
    model = checkpoint.load_model(out)
    data = D.ChatData([(toks, mask)], seq_len=64, seed=0)
    x, y, m = data.rows([(toks, mask)], 64)
    rng = np.random.default_rng(0)
    y2 = np.where(m > 0, y, rng.integers(0, 300, y.shape)).astype(np.int32)
    assert (y2 != y).sum() > 10

    def loss(yy):
        logits = model(mx.array(x), moe=MoEOptions("dropless"))
        ce = nn.losses.cross_entropy(logits, mx.array(yy), reduction="none")
        return ((ce * mx.array(m)).sum() / m.sum()).item()

    assert loss(y) == loss(y2)


def _skewed_moe(seed=0, E=8, H=64):
    args = preset("tiny")
    model = Model(args)
    moe = model.layers[0].feed_forward
    mx.random.seed(seed)
    # Router that strongly prefers experts 0 and 1.
    w = mx.random.normal((E, H)) * 0.05
    w = w + mx.array([3.0, 2.0] + [0.0] * (E - 2))[:, None] * mx.ones((E, H)) / H ** 0.5
    moe.router.weight = w
    x = mx.random.normal((64, H)) + 1.0
    return model, moe, x


def test_drop_and_pad_drops_only_over_capacity():
    _, moe, x = _skewed_moe()
    idx, w = moe.route(x)
    N, k = idx.shape
    E = 8
    for cf in (0.5, 1.0, 4.0):
        C = math.ceil(cf * N * k / E)
        y, keep = moe.experts.drop_and_pad(x, idx, cf)
        counts = np.bincount(np.array(idx).ravel(), minlength=E)
        expect_dropped = np.maximum(counts - C, 0).sum()
        assert int((1 - np.array(keep)).sum()) == expect_dropped
        kept_per_expert = np.bincount(np.array(idx).ravel(), weights=np.array(keep).ravel(),
                                      minlength=E)
        assert (kept_per_expert <= C).all()
        # Kept assignments compute exactly what the dropless path computes.
        ref = np.array(moe.experts(x, idx))
        kk = np.array(keep) > 0
        np.testing.assert_allclose(np.array(y)[kk], ref[kk], rtol=1e-5, atol=1e-5)
        assert np.abs(np.array(y)[~kk]).max(initial=0) == 0
    out, st = moe(x, STATS)
    assert st["dropped"].item() == 0
    np.testing.assert_allclose(np.array(out), np.array(moe(x)), rtol=1e-5, atol=1e-5)


def test_drop_dispatch_reaches_lora_experts():
    """Drop-and-pad runs adapter-wrapped experts (it read the base weight's shape and failed)."""
    mx.random.seed(2)
    model = apply_lora(Model(preset("tiny")), rank=2, targets=("experts",))
    x = mx.random.randint(0, 320, (2, 8))
    logits, st = model(x, moe=MoEOptions("drop", 8.0, stats=True))  # room for every token
    assert float(st["dropped"].sum()) == 0
    np.testing.assert_allclose(np.array(logits), np.array(model(x)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("int4", [False, True], ids=["float", "int4"])
def test_training_forward_equals_model_forward(int4):
    model = Model(preset("tiny"))
    if int4:  # LoRA / QAT start from int4 checkpoints: same embedding path as inference
        quantize_model(model)
    x = mx.random.randint(0, 320, (2, 12))
    logits, st = model(x, moe=STATS)
    np.testing.assert_allclose(np.array(logits), np.array(model(x)), rtol=1e-4, atol=1e-4)
    assert st["load"].shape == (2, 8) and float(st["load"].sum()) == 2 * 2 * 12 * 2


def test_balancing_bias_moves_load_towards_uniform():
    model, moe, x = _skewed_moe()

    def imbalance():
        _, st = moe(x, STATS)
        load = np.array(st["load"])
        return load.max() / load.mean(), st["load"]

    before, _ = imbalance()
    for _ in range(300):
        _, load = imbalance()
        balance_biases(model, [load] + [mx.zeros(8)], 1e-2)
    after, _ = imbalance()
    assert before > 3.0 and after < 0.5 * before, (before, after)
    assert model.layers[0].feed_forward.expert_bias.dtype == mx.float32


def test_lora_reaches_experts_and_fuses_to_official_layout(pretrained, corpus, tmp_path):
    base = checkpoint.load_model(pretrained)
    model = apply_lora(checkpoint.load_model(pretrained), rank=4, alpha=8)
    experts = model.layers[0].feed_forward.experts
    assert isinstance(experts.gate_up, LoRAExpertLinear)
    model.freeze(keys=["expert_bias"])
    x = mx.random.randint(0, 300, (2, 16))

    def loss_fn(x):
        logits = model(x, moe=MoEOptions("dropless"))
        return nn.losses.cross_entropy(logits[:, :-1], x[:, 1:]).mean()

    _, grads = nn.value_and_grad(model, loss_fn)(x)
    g = grads["model"]["layers"][0]["feed_forward"]["experts"]
    assert float(mx.abs(g["gate_up"]["lora_b"]).sum()) > 0
    assert float(mx.abs(g["down"]["lora_b"]).sum()) > 0
    assert "weight" not in g["gate_up"].get("base", {})  # base expert weights stay frozen

    out = tmp_path / "lora"
    assert main(["configs/lora.yaml", f"model={pretrained}", f"data={corpus / 'chat.jsonl'}",
                 f"out={out}", "steps=3", "seq_len=64", "batch_size=2", "lr=1e-2",
                 "eval_batches=1", "lora.rank=4"]) == 0
    fused, _ = checkpoint.load(out)  # official layout, loads like any checkpoint
    h = mx.random.normal((5, base.args.hidden_size))
    idx = mx.array(np.tile(np.arange(2, dtype=np.uint32), (5, 1)))
    a = base.layers[0].feed_forward.experts(h, idx)
    b = fused.layers[0].feed_forward.experts(h, idx)
    assert float(mx.abs(a - b).max()) > 1e-4  # the experts themselves changed
    assert not any(k.startswith("lora") for k, _ in fused.named_modules())


def test_lora_fuse_matches_adapter_output():
    model = Model(preset("tiny"))
    apply_lora(model, rank=4, alpha=8, targets=["attention", "experts", "shared_expert"])
    for _, m in model.named_modules():
        if hasattr(m, "lora_b"):
            m.lora_b = mx.random.normal(m.lora_b.shape) * 0.1
    x = mx.random.randint(0, 320, (1, 10))
    want = model(x)
    np.testing.assert_allclose(np.array(fuse_lora(model)(x)), np.array(want), rtol=1e-4,
                               atol=1e-4)


class _Data:
    def batch(self, step, bs, rows):
        rng = np.random.default_rng(step)
        xy = rng.integers(0, 320, (bs, 9)).astype(np.int32)[rows]
        return xy[:, :-1], xy[:, 1:], np.ones((len(xy), 8), np.float32)


def test_non_finite_step_is_skipped_without_touching_weights(tmp_path, pretrained):
    cfg = make_config(model="tiny", data="x", out=str(tmp_path / "nan"), steps=3,
                      batch_size=2, seq_len=8, max_bad_steps=2, compile=False, log_every=100)
    model = Model(preset("tiny"))
    tr = Trainer(cfg, model, _Data(), pretrained, {})
    real = tr._grad_step
    calls = []

    def poisoned(x, y, m):
        stats, grads = real(x, y, m)
        calls.append(1)
        if len(calls) == 2:
            stats["obj"] = stats["obj"] * float("nan")
        return stats, grads

    tr._grad_step = poisoned
    tr._train_step(0)
    tr.step = 1
    before = {k: np.array(v) for k, v in _flat(model)}
    rec = tr._train_step(1)
    assert rec.get("skipped")
    after = {k: np.array(v) for k, v in _flat(model)}
    assert all((before[k] == after[k]).all() for k in before)

    tr._grad_step = lambda *a: (lambda s, g: ({**s, "obj": s["obj"] * float("nan")}, g))(
        *real(*a))
    tr.step = 0
    with pytest.raises(TrainingError, match="non-finite"):
        tr.run()
    assert (tmp_path / "nan" / "model.safetensors").exists()


def _flat(model):
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())


def test_lines_split_tokenizes_a_prompt_like_training_text(corpus, tmp_path):
    from mlx_mobilemoe.train.bpe import train_bpe

    text = (corpus / "plays.txt").read_text()
    for split, same in (("llama3", False), ("lines", True)):
        tok = D.hf_tokenizer(train_bpe([text], 300, tmp_path / split, split=split))
        prompt, full = tok.encode("ROMEO:").ids, tok.encode("ROMEO:\nThou art").ids
        assert (full[:len(prompt)] == prompt) is same, split


def test_line_aligned_windows_start_at_line_starts(corpus, tmp_path):
    from mlx_mobilemoe.train.bpe import train_bpe

    tok_dir = train_bpe([(corpus / "plays.txt").read_text()], 300, tmp_path / "tok",
                        split="lines")
    tf = D.prepare_text(corpus / "plays.txt", tok_dir, tmp_path / "cache")
    tok = D.hf_tokenizer(tok_dir)
    data = D.PackedData([tf], [1.0], seq_len=16, seed=0, align="line")
    x, y, _ = data.batch(3, 8, slice(0, 8))
    train = np.asarray(tf.train)
    for row in x:
        hits = np.flatnonzero((np.lib.stride_tricks.sliding_window_view(train, 16) == row)
                              .all(1))
        s = int(hits[0])
        assert s == 0 or tok.decode([int(train[s - 1])]).endswith("\n")
    assert (np.array(y[:, :-1]) == np.array(x[:, 1:])).all()


@pytest.mark.parametrize("split, pieces", [
    ("llama3", ["ROMEO", ":Ċ", "Hi"]),  # ':' takes the newline: "ROMEO:" alone is unlike training
    ("lines", ["ROMEO", ":", "Ċ", "Hi"]),  # a prompt cut at a line end tokenizes as in training
])
def test_bpe_split_choice(tmp_path, split, pieces):
    from tokenizers import Tokenizer

    from mlx_mobilemoe.train.bpe import train_bpe
    out = train_bpe(["ROMEO:\nHi there.\nJULIET:\nGood night.\n"] * 10, 300, tmp_path, split)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert [p for p, _ in tok.pre_tokenizer.pre_tokenize_str("ROMEO:\nHi")] == pieces


def test_stage_file_paths_are_relative_to_the_file(tmp_path, monkeypatch):
    from mlx_mobilemoe.train.config import load_config

    folder = tmp_path / "stages"
    (folder / "base").mkdir(parents=True)
    (folder / "stage.yaml").write_text(
        "model: base\ntokenizer: tok\ndata: {a.txt: 1, /abs/b.txt: 2}\nout: ../runs/x\n")
    monkeypatch.chdir(tmp_path)  # anywhere but the file's folder
    cfg = load_config(folder / "stage.yaml", ["cache_dir=c"])
    assert cfg.model == str(folder / "base") and cfg.tokenizer == str(folder / "tok")
    assert cfg.data == {str(folder / "a.txt"): 1, "/abs/b.txt": 2}
    assert cfg.out == str(folder / "../runs/x")
    assert cfg.cache_dir == "c"  # overrides stay relative to the working directory
    (folder / "s2.yaml").write_text("model: S\ntokenizer: {vocab_size: 300}\ndata: [t.txt]\n")
    cfg = load_config(folder / "s2.yaml")
    assert cfg.model == "S" and cfg.tokenizer["vocab_size"] == 300  # a preset, not a path
    assert cfg.data == [str(folder / "t.txt")]


def test_pretraining_continues_from_a_checkpoint_with_its_tokenizer(pretrained, corpus,
                                                                    tmp_path, capsys):
    # configs/pretrain.yaml asks to train a tokenizer: a checkpoint keeps its own, with a note
    assert main(["configs/pretrain.yaml", f"model={pretrained}", "steps=1",
                 f"data={corpus / 'more.txt'}", f"out={tmp_path / 'more'}", *TINY]) == 0
    assert "its own tokenizer is used" in capsys.readouterr().err


def test_train_help_lists_every_setting_with_its_default():
    import dataclasses

    from mlx_mobilemoe.train.__main__ import settings_help
    from mlx_mobilemoe.train.config import TrainConfig

    text = settings_help()
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("moe", "lora", "qat"):
            assert f"  {f.name}=" in text, f.name
    assert "  moe.capacity_factor=1.25" in text and "  lora.rank=" in text
