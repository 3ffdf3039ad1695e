"""The checkpoint contract: official files in, official files out, clear errors otherwise."""

import json
import struct

import mlx.core as mx
import numpy as np
import pytest

import official
from conftest import add_tokenizer
from mlx_mobilemoe import load, save
from mlx_mobilemoe.checkpoint import CheckpointError, load_model, read_header
from mlx_mobilemoe.config import PRESETS, ModelArgs, preset
from mlx_mobilemoe.model import Model


def raw_tensors(path):
    """name -> (dtype, shape, bytes) straight from a safetensors file."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    return {k: (v["dtype"], tuple(v["shape"]), body[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


@pytest.mark.parametrize("qat", [True, False], ids=["qat", "bf16"])
def test_save_load_roundtrip_is_bit_exact(tmp_path, tokenizer_dir, qat):
    src = tmp_path / "src"
    official.write_checkpoint(src, official.TINY, qat=qat, seed=7)
    add_tokenizer(src, tokenizer_dir)
    model, tok = load(src)
    save(model, tok, tmp_path / "out")
    a, b = raw_tensors(src / "model.safetensors"), raw_tensors(tmp_path / "out/model.safetensors")
    assert set(a) == set(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs after save"
    for f in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (tmp_path / "out" / f).exists()
    cfg = json.loads((tmp_path / "out/config.json").read_text())
    assert ("quantization" in cfg) == qat
    tok_cfg = json.loads((tmp_path / "out/tokenizer_config.json").read_text())
    assert "<|start_header_id|>" in tok_cfg["chat_template"]  # where the contract keeps it
    assert not (tmp_path / "out/chat_template.jinja").exists()
    # and it loads again to the same logits
    again = load_model(tmp_path / "out")
    toks = mx.array([[1, 2, 3, 4]])
    assert mx.abs(again(toks) - model(toks)).max().item() == 0


def test_sharded_checkpoint_loads_like_single_file(tmp_path):
    official.write_checkpoint(tmp_path / "one", official.TINY, qat=True, seed=2)
    official.write_checkpoint(tmp_path / "three", official.TINY, qat=True, seed=2, shards=3)
    toks = mx.array([[5, 6, 7]])
    a, b = load_model(tmp_path / "one"), load_model(tmp_path / "three")
    assert mx.abs(a(toks) - b(toks)).max().item() == 0


def test_save_can_shard(tmp_path, tiny_qat):
    folder, _ = tiny_qat
    model, tok = load(folder)
    save(model, tok, tmp_path / "sharded", max_shard_bytes=20_000)
    index = json.loads((tmp_path / "sharded/model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    toks = mx.array([[9, 8, 7]])
    assert mx.abs(load_model(tmp_path / "sharded")(toks) - model(toks)).max().item() == 0


def test_float_model_saves_as_qat(tmp_path, tokenizer_dir):
    from mlx_mobilemoe.checkpoint import load_tokenizer
    model = Model(preset("tiny"))
    mx.eval(model.parameters())
    tok = load_tokenizer(add_tokenizer(_config_only(tmp_path / "t"), tokenizer_dir))
    save(model, tok, tmp_path / "q", quantized=True)
    header = read_header(tmp_path / "q/model.safetensors")
    want = official.tensor_specs(PRESETS["tiny"], qat=True)
    assert {k: (d, tuple(s)) for k, (d, s) in want.items()} == header
    assert not model.args.is_quantized  # the caller's model stays float
    from mlx_mobilemoe.model import quantize_model
    with pytest.raises(CheckpointError, match="invent float"):
        save(quantize_model(model), tok, tmp_path / "f", quantized=False)


def _config_only(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(preset("tiny").to_dict()))
    return folder


def test_s_size_qat_header_is_official(tmp_path):
    """The S config writes the official 443 tensors with official dtypes and shapes."""
    args = preset("S", quantization=dict(official.QUANTIZATION))
    model = Model(args)  # int4 from construction: no float copy of the weights
    save(model, None, tmp_path / "s")
    header = read_header(tmp_path / "s/model.safetensors")
    assert len(header) == 443
    want = official.tensor_specs(PRESETS["S"], qat=True)
    assert header == {k: (d, tuple(s)) for k, (d, s) in want.items()}


# --- bad input ----------------------------------------------------------------------------

@pytest.fixture
def good(tmp_path):
    d = tmp_path / "good"
    official.write_checkpoint(d, official.TINY, qat=True, seed=3)
    return d


def _rewrite(folder, mutate):
    tensors = official.random_tensors({**official.TINY, "quantization": 1}, qat=True, seed=3)
    mutate(tensors)
    official.write_safetensors(folder / "model.safetensors", tensors)


def _truncate(folder):
    f = folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])


def _header_past_end(folder):
    f = folder / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(struct.pack("<Q", len(data) * 2) + data[8:])


def _garbage_header(folder):
    f = folder / "model.safetensors"
    data = f.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    f.write_bytes(data[:8] + b"{" * n + data[8 + n:])


def _config_edit(**changes):
    def edit(folder):
        cfg = json.loads((folder / "config.json").read_text())
        for k, v in changes.items():
            if v is None:
                cfg.pop(k)
            else:
                cfg[k] = v
        (folder / "config.json").write_text(json.dumps(cfg))
    return edit


BAD = {
    "truncated file": (_truncate, "past the end|truncated"),
    "header past end": (_header_past_end, "past the end"),
    "header not json": (_garbage_header, "not valid JSON|nested deeper"),
    "missing tensor": (lambda d: _rewrite(d, lambda t: t.pop("model.norm.weight")),
                       "missing tensor.*model.norm.weight"),
    "unknown tensor": (lambda d: _rewrite(d, lambda t: t.update(
        {"lm_head.weight": ("BF16", np.zeros((320, 64), np.uint16))})),
        "unknown tensor.*lm_head.weight"),
    "wrong shape": (lambda d: _rewrite(d, lambda t: t.update(
        {"model.layers.0.feed_forward.router.weight": ("F32", np.zeros((7, 64), np.float32))})),
        "router.weight.*\\[7, 64\\].*\\[8, 64\\]"),
    "wrong packed dtype": (lambda d: _rewrite(d, lambda t: t.update(
        {"model.embed_tokens.weight_scale": ("F32", np.ones((320, 2), np.float32))})),
        "embed_tokens.weight_scale.*F32"),
    "config missing field": (_config_edit(hidden_size=None), "missing required.*hidden_size"),
    "config unknown field": (_config_edit(mystery_knob=3), "mystery_knob"),
    "config dense interleave": (_config_edit(interleave_moe_layer_step=2),
                                "interleave_moe_layer_step"),
    "config bad json": (lambda d: (d / "config.json").write_text("{oops"), "not valid JSON"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoints_fail_with_a_clear_error(good, case):
    mutate, pattern = BAD[case]
    mutate(good)
    with pytest.raises(CheckpointError, match=pattern):
        load_model(good)


def test_missing_folder_and_offline_hub_id_are_clear(tmp_path, monkeypatch):
    import huggingface_hub.constants
    with pytest.raises(CheckpointError, match="no such folder"):
        load_model(str(tmp_path / "nope" / "deeper"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CheckpointError, match="cannot be reached"):
        load_model("facebook/MobileMoE-S-SFT")


def test_config_roundtrip_and_presets():
    for name in PRESETS:
        args = preset(name)
        assert ModelArgs.from_dict(args.to_dict()) == args
    s = preset("S").param_counts()
    assert abs(s["total"] / 1e9 - 1.263) < 0.001 and abs(s["active"] / 1e6 - 272.5) < 0.1
    big = preset("L").param_counts()
    assert abs(big["total"] / 1e9 - 5.326) < 0.001 and abs(big["active"] / 1e6 - 921.7) < 0.1
