"""The checkpoint contract: official files in, official files out, clear errors otherwise."""

import json
import struct
from pathlib import Path

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


# --- hostile input (issue #11): named errors, bounded reads, never a hang -------------------

def _edit_header(folder, edit):
    """Rewrite model.safetensors with its header JSON changed by `edit(header)`."""
    f = folder / "model.safetensors"
    data = f.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    hb = json.dumps(header).encode()
    f.write_bytes(struct.pack("<Q", len(hb)) + hb + data[8 + n:])


def _pad_header(data):
    (n,) = struct.unpack("<Q", data[:8])
    return struct.pack("<Q", n + 8) + data[8:8 + n] + b" " * 8 + data[8 + n:]


def _set_first(field, value):
    def edit(h):
        name = next(k for k in h if k != "__metadata__")
        h[name][field] = value
    return edit


def _raw_header_len(delta):
    def edit(folder):
        f = folder / "model.safetensors"
        data = f.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        f.write_bytes(struct.pack("<Q", n + delta) + data[8:])
    return edit


def _index(obj):
    def edit(folder):
        (folder / "model.safetensors.index.json").write_text(json.dumps(obj))
    return edit


HOSTILE = {
    "shape not a list": (lambda d: _edit_header(d, _set_first("shape", 64)), "bad shape"),
    "dtype a list": (lambda d: _edit_header(d, _set_first("dtype", ["F32"])), "unknown dtype"),
    "offsets a string": (lambda d: _edit_header(d, _set_first("data_offsets", "x")),
                         "bad data_offsets"),
    "offsets of floats": (lambda d: _edit_header(d, _set_first("data_offsets", [0.0, 8.0])),
                          "bad data_offsets"),
    "entry not an object": (lambda d: _edit_header(d, _set_first("dtype", None)),
                            "unknown dtype"),
    "metadata a list": (lambda d: _edit_header(d, lambda h: h.update(__metadata__=[1])),
                        "__metadata__"),
    # header + the first data byte / header less its last (padding) byte: the data would be
    # read one byte off (NaN logits) if the tensors did not have to cover the data exactly
    "header length +1": (_raw_header_len(1), "not valid JSON|not UTF-8|no tensor|cover"),
    "header length -1": (_raw_header_len(-1), "not valid JSON|no tensor|cover"),
    "header length -1, padded": (lambda d: (_edit_header(d, lambda h: None),
                                            (d / "model.safetensors").write_bytes(
        _pad_header((d / "model.safetensors").read_bytes())), _raw_header_len(-1)(d)),
        "cover"),
    "trailing bytes": (lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes() + b"\0" * 16), "trailing bytes"),
    "header nested deep": (lambda d: _edit_header(d, lambda h: h.update(
        x=json.loads("[" * 200 + "]" * 200))), "nested deeper"),
    "config not UTF-8": (lambda d: (d / "config.json").write_bytes(
        (d / "config.json").read_bytes().replace(b'"mobilemoe"', b'"mobilemo\xff"')), "not UTF-8"),
    "config nested deep": (lambda d: (d / "config.json").write_text(
        '{"a": ' + "[" * 5000 + "]" * 5000 + "}"), "nested deeper"),
    "config NaN": (lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": NaN')),
        "NaN"),
    "index weight_map a list": (_index({"weight_map": ["model.safetensors"]}), "weight_map"),
    "index a list": (_index([1, 2]), "weight_map"),
    "index shard outside": (_index({"weight_map": {"x": "../model.safetensors"}}),
                            "shard names"),
    "weights a directory": (lambda d: ((d / "model.safetensors").unlink(),
                                       (d / "model.safetensors").mkdir()), "directory"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_checkpoints_fail_with_a_named_error(good, case):
    mutate, pattern = HOSTILE[case]
    mutate(good)
    with pytest.raises(CheckpointError, match=pattern):
        load_model(good)


def test_fifos_and_dev_zero_are_refused_without_blocking(tmp_path, tokenizer_dir):
    """In a subprocess with a deadline: a regression would block, not fail."""
    import subprocess
    import sys
    script = f"""
import os, shutil, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import official
from conftest import add_tokenizer
from mlx_mobilemoe import load
from mlx_mobilemoe.checkpoint import CheckpointError
for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
             "generation_config.json", "special_tokens_map.json"):
    for kind in ("fifo", "zero"):
        d = {str(tmp_path)!r} + f"/{{name}}-{{kind}}"
        official.write_checkpoint(d, official.TINY, qat=True, seed=3)
        add_tokenizer(d, {str(tokenizer_dir)!r})
        p = os.path.join(d, name)
        if os.path.exists(p):
            os.unlink(p)
        if kind == "fifo":
            os.mkfifo(p)
        else:
            os.symlink("/dev/zero", p)
        try:
            load(d)
            print("LOADED", name, kind)
        except CheckpointError as e:
            assert "not a regular file" in str(e), e
            print("refused", name, kind)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("refused") == 12, r.stdout


def _tiny_folder(tmp_path, tokenizer_dir, vocab=320, name="t"):
    d = tmp_path / name
    official.write_checkpoint(d, {**official.TINY, "vocab_size": vocab}, qat=True, seed=3)
    add_tokenizer(d, tokenizer_dir)
    return d


def test_tokenizer_must_fit_the_model_vocabulary(tmp_path, tokenizer_dir):
    from mlx_mobilemoe.checkpoint import TokenizerError
    small = _tiny_folder(tmp_path, tokenizer_dir, vocab=300, name="small")
    with pytest.raises(TokenizerError, match="vocab_size is 300"):
        load(small)
    special = _tiny_folder(tmp_path, tokenizer_dir, name="special")
    tj = json.loads((special / "tokenizer.json").read_text())
    tj["added_tokens"].append({"id": 320, "content": "<|extra|>", "single_word": False,
                               "lstrip": False, "rstrip": False, "normalized": False,
                               "special": True})
    (special / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(TokenizerError, match="largest id 320"):
        load(special)


@pytest.mark.parametrize("edit,pattern", [
    (lambda d: (d / "tokenizer.json").write_text('{"model": 5}'), "cannot be loaded"),
    (lambda d: (d / "tokenizer.json").write_text("[" * 3000 + "]" * 3000), "JSON|object"),
    (lambda d: (d / "tokenizer.json").write_bytes(b'{"x": "\xff"}'), "not UTF-8"),
    (lambda d: (d / "tokenizer_config.json").write_text('{"chat_template": 5}'),
     "must be a string"),
    (lambda d: (d / "tokenizer_config.json").write_text('{"bos_token": [1, 2]}'),
     "cannot be loaded"),
    (lambda d: (d / "tokenizer_config.json").write_text("[]"), "not a JSON object"),
    (lambda d: (d / "tokenizer_config.json").write_text('{"add_bos_token": "yes"}'),
     "add_bos_token"),
], ids=["tokenizer.json wrong", "tokenizer.json deep", "tokenizer.json not UTF-8",
        "template not a string", "bos a list", "config a list", "add_bos_token a string"])
def test_bad_tokenizer_files_are_tokenizer_errors(tmp_path, tokenizer_dir, edit, pattern):
    from mlx_mobilemoe.checkpoint import TokenizerError
    d = _tiny_folder(tmp_path, tokenizer_dir)
    edit(d)
    with pytest.raises(TokenizerError, match=pattern):
        load(d)


def test_nan_weights_are_found_by_verify_and_the_verbose_cli(tmp_path, tokenizer_dir):
    import subprocess
    import sys
    d = _tiny_folder(tmp_path, tokenizer_dir)
    _rewrite(d, lambda t: t["model.norm.weight"][1].__setitem__(3, 0x7FC0))  # BF16 NaN
    load(d)  # without verify: loads (the check costs a pass over the weights)
    with pytest.raises(CheckpointError, match="non-finite.*model.norm.weight"):
        load(d, verify=True)
    r = subprocess.run([sys.executable, "-m", "mlx_mobilemoe.generate", "--model", str(d),
                        "--prompt", "x", "--verbose"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "non-finite" in r.stderr


def test_a_tokenizers_panic_is_a_tokenizer_error(tmp_path, tokenizer_dir, monkeypatch):
    """The Rust tokenizers library panics on some corrupt tokenizer.json files; pyo3 raises
    that as a BaseException (PanicException), which `except Exception` missed (fuzz case)."""
    from transformers import PreTrainedTokenizerFast

    from mlx_mobilemoe.checkpoint import TokenizerError

    class PanicException(BaseException):
        pass

    def panic(*a, **k):
        raise PanicException("range end index 18446744073709551609 out of range")

    d = _tiny_folder(tmp_path, tokenizer_dir)
    monkeypatch.setattr(PreTrainedTokenizerFast, "from_pretrained", panic)
    with pytest.raises(TokenizerError, match="PanicException"):
        load(d)
