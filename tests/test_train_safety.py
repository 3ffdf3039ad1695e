"""Training and output folders under faults (issue 11): every checkpoint has its tokenizer,
a kill between the swap's renames resumes from the newest checkpoint, non-finite weights are
never written, Ctrl-C saves, bad settings and data are named errors, foreign files survive."""

import json
import os
import shutil
import signal
import stat

import mlx.core as mx
import numpy as np
import pytest

from mlx_mobilemoe import checkpoint, export, fsutil, preset
from mlx_mobilemoe.model import Model
from mlx_mobilemoe.train import loop, make_config
from mlx_mobilemoe.train.__main__ import main
from mlx_mobilemoe.train.loop import Trainer, TrainingError

TINY = ["model=tiny", "tokenizer={vocab_size: 300}", "seq_len=16", "batch_size=4",
        "grad_accum=1", "log_every=100", "eval_batches=1", "warmup=2", "lr=3e-3"]


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety")
    lines = [f"ROMEO {i}:\nThou art the {['king', 'lord', 'moon'][i % 3]} of {i * 7}.\n"
             for i in range(400)]
    (d / "plays.txt").write_text("".join(lines))
    return d / "plays.txt"


def _metrics(out):
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def _losses(out):
    return [r["loss"] for r in _metrics(out) if "loss" in r and "eval" not in r]


def test_every_checkpoint_keeps_tokenizer_and_cache(text, tmp_path):
    # no cache_dir: the tokenizer is trained into out/cache, which every swap carries over
    out = tmp_path / "run"
    common = [*TINY, f"data={text}", f"out={out}", "steps=4", "save_every=1"]
    assert main([*common, "stop_after=2"]) == 0
    assert (out / "tokenizer.json").exists()
    tok_cache = next((out / "cache").glob("tokenizer-*"))
    tokens = next((out / "cache").glob("*.tokens"))
    stamp = (tokens / "train.bin").stat().st_mtime_ns
    assert main([*common, "--resume"]) == 0
    assert (tokens / "train.bin").stat().st_mtime_ns == stamp  # not tokenized again
    assert (out / "tokenizer.json").read_bytes() == (tok_cache / "tokenizer.json").read_bytes()
    model, tok = checkpoint.load(out)  # what `generate --model out` opens
    assert tok.vocab_size <= model.args.vocab_size
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert not fsutil.staging_names(out)


def test_resume_after_kill_between_the_renames_finds_newest(text, tmp_path):
    common = [*TINY, f"data={text}", "steps=6", f"cache_dir={tmp_path / 'cache'}"]
    full = tmp_path / "full"
    assert main([*common, f"out={full}"]) == 0
    out = tmp_path / "out"
    assert main([*common, f"out={out}", "stop_after=2"]) == 0
    shutil.copytree(out, tmp_path / "step2")
    assert main([*common, f"out={out}", "stop_after=4", "--resume"]) == 0
    # the state a kill between the two renames leaves: no out/, old and new beside it
    os.rename(out, tmp_path / ".out.complete")
    os.rename(tmp_path / "step2", tmp_path / ".out.old")
    assert main([*common, f"out={out}", "--resume"]) == 0
    assert [r["step"] for r in _metrics(out) if r.get("event") == "resume"] == [2, 4]
    np.testing.assert_allclose(_losses(out), _losses(full), rtol=0, atol=1e-5)
    assert not fsutil.staging_names(out)


class _Batches:
    """Random token batches; `hook(step)` runs before each batch is drawn."""

    def __init__(self, hook=None):
        self.hook = hook

    def batch(self, step, bs, rows):
        if self.hook:
            self.hook(step)
        rng = np.random.default_rng(step)
        xy = rng.integers(0, 300, (bs, 9)).astype(np.int32)[rows]
        return xy[:, :-1], xy[:, 1:], np.ones((len(xy), 8), np.float32)


def _trainer(tmp_path, tok_dir, hook=None, **kw):
    cfg = make_config(model="tiny", data="x", out=str(tmp_path / "t"), batch_size=2,
                      seq_len=8, compile=False, log_every=100, warmup=0,
                      **{"steps": 6, "save_every": 2, **kw})
    return cfg, Trainer(cfg, Model(preset("tiny")), _Batches(hook), tok_dir, {})


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, text):
    from mlx_mobilemoe.train.bpe import train_bpe

    return train_bpe([text.read_text()], 300, tmp_path_factory.mktemp("tok"))


def _saved_params(out):
    return mx.load(str(out / "train_state" / "params.safetensors"))


def test_non_finite_weights_are_never_saved(tmp_path, tok_dir):
    holder = {}

    def blow_up(step):  # after the step-2 checkpoint the learning rate becomes inf
        if step == 2:
            holder["cfg"].lr = float("inf")

    cfg, tr = _trainer(tmp_path, tok_dir, blow_up)
    holder["cfg"] = cfg
    with pytest.raises(TrainingError, match="non-finite.*checkpoint of step 2 .* kept"):
        tr.run()
    meta = json.loads((cfg.out_dir / "train_state" / "state.json").read_text())
    assert meta["step"] == 2
    assert all(mx.isfinite(v).all().item() for v in _saved_params(cfg.out_dir).values())
    # and save() itself refuses them (here: one weight of a fresh model set to NaN by hand)
    cfg, tr = _trainer(tmp_path / "b", tok_dir)
    tr.save()
    w = tr.model.layers[0].self_attn.q_proj.weight
    tr.model.layers[0].self_attn.q_proj.weight = mx.where(mx.arange(w.shape[1]) == 0,
                                                          float("nan"), w)
    with pytest.raises(TrainingError, match=r"non-finite \(NaN/Inf\) values in tensor\(s\): "
                       r"model.layers.0.self_attn.q_proj.weight; not saved: the checkpoint "
                       r"of step 0 is kept"):
        tr.save()
    assert all(mx.isfinite(v).all().item() for v in _saved_params(cfg.out_dir).values())


def test_ctrl_c_stops_after_the_step_with_a_checkpoint(tmp_path, tok_dir):
    def ctrl_c(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    cfg, tr = _trainer(tmp_path, tok_dir, ctrl_c)
    res = tr.run()
    assert res == {"step": 4, "stopped": True, "interrupted": True}
    assert json.loads((cfg.out_dir / "train_state" / "state.json").read_text())["step"] == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored

    def twice(step):  # a second Ctrl-C stops at once, saving nothing more
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    cfg, tr = _trainer(tmp_path / "b", tok_dir, twice, save_every=0)
    with pytest.raises(KeyboardInterrupt):
        tr.run()
    assert not (cfg.out_dir / "train_state").exists()


def test_ctrl_c_through_the_cli_exits_130_without_traceback(text, tmp_path, capsys,
                                                           monkeypatch):
    real = Trainer._train_step

    def step(self, i):
        if i == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, i)

    monkeypatch.setattr(Trainer, "_train_step", step)
    out = tmp_path / "run"
    args = [*TINY, f"data={text}", f"out={out}", "steps=50", f"cache_dir={tmp_path / 'c'}"]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "stopped at step 2 (SIGINT)" in err
    assert json.loads((out / "train_state" / "state.json").read_text())["step"] == 2


@pytest.mark.parametrize("args, message", [
    (["lr=nan"], "lr must be finite"),
    (["lr=inf"], "lr must be finite"),
    (["lr=1e9"], "lr must be <= 1"),
    (["lr=-1"], "lr must be > 0"),
    (["lr=0"], "lr must be > 0"),
    (["steps=abc"], "steps must be an integer, got 'abc'"),
    (["steps=1.5"], "steps must be an integer"),
    (["steps=true"], "steps must be an integer"),
    (["steps=1e12"], "steps must be <= 2147483647"),
    (["seed=-1"], "seed must be >= 0"),
    (["batch_size=3", "grad_accum=2"], "not divisible"),
    (["betas=[0.9]"], "betas must be two numbers"),
    (["moe.capacity_factor=.nan"], "moe.capacity_factor must be finite"),
    (["moe=3"], "moe must be a mapping"),
    (["data=[a"], "not valid YAML"),
    (["data={}"], "no training data"),
    (["data={a.txt: -1}"], "must be >= 0"),
    (["tokenizer={vocab_size: abc}"], "tokenizer.vocab_size must be an integer"),
    (["compile=maybe"], "compile must be true or false"),
])
def test_bad_settings_are_argparse_errors(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["model=tiny", "data=a.txt", *args])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_stage_files_are_argparse_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: pretrain\nlr: [1, 2\n")
    for path, message in ((bad, "bad.yaml: not valid YAML"), (tmp_path / "no.yaml",
                                                              "no such stage file"),
                          (tmp_path, "no such stage file")):
        with pytest.raises(SystemExit) as e:
            main([str(path), "data=a.txt"])
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_bad_data_is_a_named_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n\n{"text": "b"\n')
    (tmp_path / "list.jsonl").write_text('{"text": "a"}\n[1, 2]\n')
    (tmp_path / "notext.jsonl").write_text('{"text": "a"}\n{"txt": "b"}\n')
    cases = [(tmp_path / "missing.txt", "missing.txt: no such file or folder"),
             (empty, "empty: no data files in this folder"),
             (tmp_path / "bad.jsonl", "bad.jsonl:3: not valid JSON"),
             (tmp_path / "list.jsonl", "list.jsonl:2: a row must be a JSON object")]
    for path, message in cases:
        assert main([*TINY, f"data={path}", f"out={tmp_path / 'o'}"]) == 1, path
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    from mlx_mobilemoe.train import data as D
    with pytest.raises(D.DataError, match="notext.jsonl:2: no 'text' string"):
        D.documents(tmp_path / "notext.jsonl", 0.1)


def test_out_folders_with_other_files_are_refused_never_emptied(text, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    common = [*TINY, f"data={text}", "steps=2", f"cache_dir={tmp_path / 'c'}"]
    assert main([*common, f"out={out}"]) == 1
    assert "notes.txt" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["notes.txt"]
    assert main([*common, f"out={out}", "--overwrite"]) == 0  # trains there; keeps the file
    assert (out / "notes.txt").read_text() == "the user's" and (out / "config.json").exists()
    capsys.readouterr()
    assert main([*common, f"out={out}"]) == 1  # a run is there: --resume or --overwrite
    assert "--resume" in capsys.readouterr().err

    # export: not into a non-empty folder, never onto its own source
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.me").write_text("x")
    assert export.main([str(out), str(dest)]) == 1
    assert export.main([str(out), str(out)]) == 1
    assert "source folder" in capsys.readouterr().err
    assert (out / "train_state" / "state.json").exists() and (out / "metrics.jsonl").exists()
    assert export.main([str(out), str(dest), "--overwrite"]) == 0
    assert (dest / "keep.me").read_text() == "x"
    assert checkpoint.load_model(dest).args.is_quantized
    # the library writer refuses a folder of somebody else's files
    with pytest.raises(fsutil.OutputFolderError, match="keep.me"):
        checkpoint.save(checkpoint.load_model(out), None, dest)


def test_check_out_dir_allows_leftovers_of_an_unsaved_attempt(tmp_path):
    cfg = make_config(model="tiny", data="x", out=str(tmp_path / "o"))
    (tmp_path / "o" / "cache").mkdir(parents=True)
    (tmp_path / "o" / "metrics.jsonl").write_text('{"step": 1}\n')
    loop.check_out_dir(cfg, resume=False)  # no checkpoint, nothing foreign: fine
