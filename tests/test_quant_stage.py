"""The train CLI's qat stage: int4 checkpoints from fake-quant training, exact resume, export."""

import json

import mlx.core as mx
import numpy as np
import pytest

from mlx_mobilemoe import checkpoint, export, qat
from mlx_mobilemoe.train.__main__ import main
from mlx_mobilemoe.train.qat_stage import load_qat_run

from test_export import LOGIT_ATOL

TINY = ["seq_len=16", "batch_size=4", "grad_accum=1", "eval_every=0", "save_every=0",
        "eval_batches=1", "log_every=100", "warmup=1"]


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("qat")
    words = ["thou", "art", "the", "king", "sweet", "lord", "romeo", "speak"]
    (d / "text.txt").write_text("\n".join(" ".join(words[(i * j) % 8] for j in range(9))
                                          for i in range(400)))
    out = d / "float"
    assert main(["configs/pretrain.yaml", "model=tiny", f"data={d / 'text.txt'}", f"out={out}",
                 "steps=2", "lr=3e-3", "tokenizer={vocab_size: 300}",
                 f"cache_dir={d / 'cache'}", *TINY]) == 0
    return d, out


def _losses(out):
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def test_qat_stage_writes_int4_that_matches_its_fake_quant_model(float_run, tmp_path):
    d, flt = float_run
    common = ["configs/qat.yaml", f"model={flt}", f"data={d / 'text.txt'}", "steps=3",
              f"cache_dir={d / 'cache'}", "lr=1e-3", "qat.scales=learned", *TINY]
    assert main([*common, f"out={tmp_path / 'full'}"]) == 0
    out = tmp_path / "full"
    int4 = checkpoint.load_model(out)
    assert int4.args.quantization["format"] == "mobilemoe-int4-g32"

    fq = load_qat_run(out)  # the float32 master + learned scales the run ended with
    assert fq.model.embed_tokens.act_bits == 8 and "log_scales" in fq.model.embed_tokens
    qat.round_to_storage(fq)
    qat.set_act_bits(fq, None)
    x = mx.array([[1, 5, 9, 40, 7, 3, 2, 200, 11]])
    np.testing.assert_allclose(np.array(int4(x)), np.array(fq(x)), rtol=0, atol=LOGIT_ATOL)

    # export of the run folder = the run's own int4 file, tensor for tensor
    assert export.main([str(out), str(tmp_path / "ship")]) == 0
    a = checkpoint.read_tensors(out)[0]
    b = checkpoint.read_tensors(tmp_path / "ship")[0]
    assert a.keys() == b.keys() and all(mx.array_equal(a[k], b[k]).item() for k in a)
    assert not (tmp_path / "ship" / "train_state").exists()

    # --resume continues exactly (scales and act quantization included)
    assert main([*common, f"out={tmp_path / 'cut'}", "stop_after=2"]) == 0
    assert main([*common, f"out={tmp_path / 'cut'}", "--resume"]) == 0
    np.testing.assert_allclose(_losses(tmp_path / "cut"), _losses(out), rtol=0, atol=1e-5)


def test_qat_stage_refuses_presets_and_int4(float_run, tmp_path, capsys):
    d, flt = float_run
    common = [f"data={d / 'text.txt'}", f"cache_dir={d / 'cache'}", "steps=1", *TINY]
    assert main(["stage=qat", "model=tiny", "tokenizer={vocab_size: 300}",
                 f"out={tmp_path / 'a'}", *common]) == 1
    assert "float checkpoint" in capsys.readouterr().err
    export.export_folder(flt, tmp_path / "int4")
    assert main(["stage=qat", f"model={tmp_path / 'int4'}", f"out={tmp_path / 'b'}",
                 *common]) == 1
    assert "already int4" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a bad setting: refused with the other settings
        main(["stage=qat", f"model={flt}", "qat.scales=magic", f"out={tmp_path / 'c'}",
              *common])
    assert e.value.code == 2 and "scales" in capsys.readouterr().err


def test_qat_stage_keeps_line_aligned_windows(float_run, tmp_path, monkeypatch):
    """stage=qat align=line trains on line-aligned windows (the stage once built its data
    without `align`, silently training on unaligned windows)."""
    from mlx_mobilemoe.train import data as D

    aligns = []

    class Spy(D.PackedData):
        def __init__(self, *args, **kwargs):
            aligns.append(kwargs.get("align"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(D, "PackedData", Spy)
    d, flt = float_run
    assert main(["configs/qat.yaml", f"model={flt}", f"data={d / 'text.txt'}", "steps=1",
                 f"cache_dir={d / 'cache'}", "align=line", f"out={tmp_path / 'a'}",
                 *TINY]) == 0
    assert aligns == ["line"]
