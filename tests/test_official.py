"""The released MobileMoE checkpoints (issue #10): official-shaped QAT and BF16 folders load
and chat, the released chat format renders the pinned ids, our configs are the released ones
and pass lalamo's and the Java port's readers' constraints, the Hugging Face cache works
offline and a revision pins a snapshot."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import official
import official_fixture as fx
from mlx_mobilemoe import load, save
from mlx_mobilemoe.checkpoint import (CheckpointError, ConfigFileError, TokenizerError,
                                      check_dtype, default_dtype, load_model,
                                      load_tokenizer)
from mlx_mobilemoe.config import PRESETS, QAT_QUANTIZATION, RELEASED_KEYS, ConfigError, \
    ModelArgs, preset
from mlx_mobilemoe.generate import prompt_tokens

HERE = Path(__file__).parent

# Java port, MobileMoeTokenizerIntegrationTest: "Name one JVM language." as a user turn plus
# the generation prompt, and plain encoding with BOS.
PINNED_CHAT = [128000, 128005, 882, 128006, 271, 678, 832, 73479, 4221, 13, 128008, 128005,
               78191, 128006, 271]
PINNED_TEXT = [128000, 9906, 11, 13716, 26694, 36, 0]


@pytest.fixture(scope="session")
def official_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    out = {}
    for layout in ("qat", "bf16"):
        out[layout] = root / layout
        fx.write_official(out[layout], layout=layout, seed=3)
    return out


# --- the readers' constraints ------------------------------------------------------------

def lalamo_java_problems(cfg: dict) -> list:
    """The checks lalamo's HFMobileMoEConfig (every field required, Literal values,
    to_decoder_config's checks) and the Java port's MobileMoeHuggingFaceConfig (types, positive
    sizes, heads x head_dim = hidden, rope original context = max_position_embeddings, the
    quantization geometry and axis strings) make, restated from their sources."""
    p = []
    lalamo_keys = set(RELEASED_KEYS) - {"bos_token_id"}
    if "quantization" not in cfg:
        lalamo_keys.discard("quantization")  # lalamo reads QAT only; Java takes BF16 too
    p += [f"missing {k}" for k in sorted(lalamo_keys - set(cfg))]
    if p:
        return p
    literal = dict(model_type="mobilemoe", hidden_act="silu", use_qk_norm=True,
                   attn_temperature_tuning=False, tie_word_embeddings=True,
                   torch_dtype="bfloat16", attention_bias=False, norm_topk_prob=True)
    p += [f"{k}={cfg[k]!r}" for k, v in literal.items()
          if cfg[k] != v or type(cfg[k]) is not type(v)]
    if cfg["architectures"] != ["MobileMoEForCausalLM"]:
        p.append("architectures")
    if not isinstance(cfg["eos_token_id"], list):
        p.append("eos_token_id is not a list")
    L = cfg["num_hidden_layers"]
    if cfg["no_rope_layers"] != [1] * L:
        p.append("no_rope_layers")
    if cfg["layer_types"] != ["full_attention"] * L:
        p.append("layer_types")
    if cfg["interleave_moe_layer_step"] != 1 or cfg["attention_dropout"] != 0.0:
        p.append("interleave/dropout")
    rs = cfg["rope_scaling"]
    if not (rs["rope_type"] == "llama3" and rs["factor"] == 16
            and rs["original_max_position_embeddings"] == 8192
            and rs["low_freq_factor"] == 1.0 and rs["high_freq_factor"] == 1.0):
        p.append(f"rope_scaling {rs}")
    ints = ["hidden_size", "intermediate_size", "intermediate_size_mlp", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
            "max_position_embeddings", "num_local_experts", "num_experts_per_tok"]
    p += [f"{k} not a positive int" for k in ints
          if not isinstance(cfg[k], int) or isinstance(cfg[k], bool) or cfg[k] <= 0]
    for k in ("rms_norm_eps", "rope_theta", "routed_scaling_factor"):
        if not (isinstance(cfg[k], (int, float)) and math.isfinite(cfg[k]) and cfg[k] > 0):
            p.append(f"{k} not finite positive")
    if cfg["num_attention_heads"] * cfg["head_dim"] != cfg["hidden_size"]:
        p.append("heads x head_dim != hidden_size")
    if cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
        p.append("heads % kv heads")
    if cfg["num_experts_per_tok"] > cfg["num_local_experts"]:
        p.append("k > E")
    if cfg["intermediate_size_mlp"] % cfg["intermediate_size"]:
        p.append("shared width")
    if rs["original_max_position_embeddings"] != cfg["max_position_embeddings"]:
        p.append("rope original context != max_position_embeddings")
    if "quantization" in cfg:
        want = dict(fx.QUANTIZATION)
        q = cfg["quantization"]
        if set(q) != set(want) or any(q[k] != v or type(q[k]) is not type(v)
                                      for k, v in want.items()):
            p.append(f"quantization {q}")
    return p


@pytest.mark.parametrize("name", ["S", "L"])
def test_presets_are_the_released_configs(name):
    cfg = preset(name).to_dict()
    assert tuple(cfg) == tuple(k for k in RELEASED_KEYS if k != "quantization")
    assert lalamo_java_problems(cfg) == []
    assert lalamo_java_problems(preset(name, quantization=dict(QAT_QUANTIZATION)).to_dict()) == []
    assert cfg["routed_scaling_factor"] == 2.5 and cfg["max_position_embeddings"] == 8192
    if name == "S":  # the released S config.json, less its Hugging Face housekeeping keys
        released = {k: v for k, v in fx.official_config("bf16", "S").items()
                    if k not in fx.HOUSEKEEPING_KEYS}
        assert cfg == released


def test_the_checker_catches_what_the_readers_refuse():
    good = preset("S").to_dict()
    for key, value in [("max_position_embeddings", 131072), ("routed_scaling_factor", 0.0),
                       ("layer_types", None), ("no_rope_layers", []),
                       ("attn_temperature_tuning", 0)]:
        assert lalamo_java_problems({**good, key: value}), key
    assert lalamo_java_problems({k: v for k, v in good.items() if k != "torch_dtype"})


@pytest.mark.parametrize("layout", ["qat", "bf16"])
def test_official_folder_loads_and_saves_the_released_config(official_dirs, tmp_path, layout):
    folder = official_dirs[layout]
    model, tok = load(folder)
    assert model.args.routed_scaling_factor == 2.5 and model.args.is_quantized == (layout == "qat")
    out = save(model, tok, tmp_path / "saved")
    written = json.loads((out / "config.json").read_text())
    released = {k: v for k, v in json.loads((folder / "config.json").read_text()).items()
                if k not in fx.HOUSEKEEPING_KEYS}
    assert written == released and list(written) == list(released)
    assert lalamo_java_problems(written) == []
    # bit-exact: the same bytes per tensor after load -> save
    src = official.random_tensors(fx.official_config(layout), qat=layout == "qat", seed=3)
    back = mx.load(str(out / "model.safetensors"))
    for name, (dtype, arr) in src.items():
        got = np.array(back[name].view(mx.uint16) if dtype == "BF16" else back[name])
        assert np.array_equal(got.view(arr.dtype), arr), name


def test_official_qat_logits_match_the_numpy_reference(official_dirs):
    folder = official_dirs["qat"]
    cfg = fx.official_config("qat")
    tensors = official.random_tensors(cfg, qat=True, seed=3)
    tokens = [128000, 128005, 882, 128006, 271, 6151]
    want = official.reference_logits(cfg, tensors, tokens)
    model = load_model(folder)
    got = np.array(model(mx.array([tokens]))[0].astype(mx.float32))
    assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.max(np.abs(want)))


def test_released_chat_format_gives_the_pinned_ids(official_dirs):
    _, tok = load(official_dirs["qat"])
    msgs = [{"role": "user", "content": "Name one JVM language."}]
    assert prompt_tokens(tok, msgs, raw=False) == PINNED_CHAT
    assert tok.encode("Hello, MobileMoE!") == PINNED_TEXT
    plain = [{"role": "user", "content": "Hello, MobileMoE!"}]
    assert prompt_tokens(tok, plain, raw=True) == PINNED_TEXT  # add_bos_token: true
    tok._add_bos_token = False  # as a tokenizer_config.json with add_bos_token false says
    assert prompt_tokens(tok, plain, raw=True) == PINNED_TEXT[1:]
    assert tok.decode(PINNED_TEXT[1:]) == "Hello, MobileMoE!"
    # stop ids: config.json's, generation_config.json's and the tokenizer's eos (<|eot|>)
    assert set(tok.eos_token_ids) == {128001, 128007, 128008}


def test_template_that_cannot_render_is_refused_at_load(official_dirs, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(official_dirs["qat"], folder)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    for template in ["{% for m in messages %}{{ m.content ", "{{ raise_exception('no') }}",
                     "{{ 'x' * 100000000 }}"]:
        cfg["chat_template"] = template
        cfg_path.write_text(json.dumps(cfg))
        with pytest.raises(TokenizerError, match="chat"):
            load_tokenizer(folder)


def test_attn_temperature_tuning_true_is_refused_by_name(official_dirs, tmp_path):
    folder = tmp_path / "t"
    shutil.copytree(official_dirs["bf16"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["attn_temperature_tuning"] = True
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigFileError, match="attn_temperature_tuning"):
        load(folder)
    with pytest.raises(ConfigError, match="attn_temperature_tuning"):
        load(folder)


def test_dtype_defaults_and_cpu_limits():
    qat = preset("tiny", quantization=dict(QAT_QUANTIZATION))
    bf16 = preset("tiny")
    cpu, gpu = mx.Device(mx.cpu), mx.Device(mx.gpu)
    assert default_dtype(qat, cpu) == default_dtype(bf16, cpu) == mx.float32
    assert default_dtype(qat, gpu) == mx.float16  # the fused int4 kernels' dtype
    assert default_dtype(bf16, gpu) == mx.bfloat16  # the checkpoint's own
    with pytest.raises(CheckpointError, match="float16 cannot run .* CPU"):
        check_dtype(bf16, mx.float16, cpu)
    check_dtype(qat, mx.bfloat16, cpu)  # int4 experts run in any float dtype on a CPU
    check_dtype(bf16, mx.bfloat16, gpu)


def run_cli(*args, env=None, stdin=None):
    return subprocess.run([sys.executable, "-m", "mlx_mobilemoe.generate", *args],
                          input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("layout", ["qat", "bf16"])
def test_generate_cli_chats_with_official_folders(official_dirs, layout):
    r = run_cli("--model", str(official_dirs[layout]), "--prompt", "hi", "--max-tokens", "8",
                "--verbose")
    assert r.returncode == 0, r.stderr
    assert "prompt: 11 tokens" in r.stderr  # BOS, header, user, header, \n\n, hi, eot, ...
    assert "[dtype: float32" in r.stderr


def _fake_hub_cache(root: Path, src: Path, shas) -> Path:
    repo = root / "models--facebook--MobileMoE-S-QAT"
    for sha, seed in shas:
        snap = repo / "snapshots" / sha
        snap.mkdir(parents=True)
        for f in src.iterdir():
            os.link(f, snap / f.name)
        if seed is not None:  # a different commit: different weights
            official.write_safetensors(snap / "model.safetensors.new", official.random_tensors(
                fx.official_config("qat"), qat=True, seed=seed))
            (snap / "model.safetensors").unlink()
            (snap / "model.safetensors.new").rename(snap / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(shas[0][0])
    return repo


def test_hugging_face_cache_offline_and_revision(official_dirs, tmp_path, monkeypatch):
    import huggingface_hub.constants
    main_sha, old_sha = "a" * 40, "b" * 40
    repo = _fake_hub_cache(tmp_path / "hub", official_dirs["qat"], [(main_sha, None),
                                                                    (old_sha, 7)])
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    r = run_cli("--model", "facebook/MobileMoE-S-QAT", "--prompt", "hi", "--max-tokens", "4",
                env=env)
    assert r.returncode == 0, r.stderr
    # in-process: the id with and without a pinned revision, and the cache folder itself
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    x = mx.array([[128000, 128005, 882]])
    logits = {}
    for key, model_id, rev in [("main", "facebook/MobileMoE-S-QAT", None),
                               ("old", "facebook/MobileMoE-S-QAT", old_sha),
                               ("folder-old", str(repo), old_sha),
                               ("folder-main", str(repo), None)]:
        logits[key] = np.array(load_model(model_id, revision=rev)(x))
    assert np.array_equal(logits["main"], logits["folder-main"])
    assert np.array_equal(logits["old"], logits["folder-old"])
    assert not np.array_equal(logits["main"], logits["old"])
    with pytest.raises(CheckpointError, match="cache"):
        load_model("facebook/MobileMoE-S-QAT", revision="c" * 40)
    with pytest.raises(CheckpointError, match="revision applies"):
        load_model(official_dirs["qat"], revision=main_sha)


def test_fixture_script_runs_standalone(tmp_path):
    r = subprocess.run([sys.executable, str(HERE / "official_fixture.py"), str(tmp_path / "o"),
                        "--layout", "bf16"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["config.json", "generation_config.json", "model.safetensors",
                     "tokenizer.json", "tokenizer_config.json"]
    assert "quantization" not in json.loads((tmp_path / "o" / "config.json").read_text())
