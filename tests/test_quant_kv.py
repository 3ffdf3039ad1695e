"""--kv-bits 8: mlx-lm's quantized KV cache under generate, against the float cache."""

import subprocess
import sys
import types

import mlx.core as mx
import pytest
from mlx_lm.models.cache import QuantizedKVCache

from conftest import add_tokenizer
from mlx_mobilemoe import checkpoint, config, load
from mlx_mobilemoe.generate import Session
from mlx_mobilemoe.model import Model


def opts(kv_bits):
    return types.SimpleNamespace(temp=0.0, top_p=1.0, top_k=0, system=None, raw=True,
                                 max_tokens=20, kv_bits=kv_bits)


def test_kv8_greedy_matches_float_cache(tmp_path, tokenizer_dir, capsys):
    mx.random.seed(3)
    m = Model(config.preset("tiny", head_dim=32))  # KV groups need head_dim % 32 == 0
    folder = add_tokenizer(checkpoint.save(m, None, tmp_path / "m", quantized=True),
                           tokenizer_dir)
    model, tok = load(folder)
    out = {}
    for bits in (None, 8):
        s = Session(model, tok, opts(bits))
        first = s.reply("Speak, speak.")
        second = s.reply("You are all resolved?")  # trims and reuses the quantized cache
        assert first.generation_tokens == 20
        out[bits] = [x["content"] for x in s.messages if x["role"] == "assistant"]
        if bits:
            assert all(isinstance(c, QuantizedKVCache) and c.bits == 8 for c in s.cache)
        assert second is not None
    assert out[8] == out[None]

    r = subprocess.run([sys.executable, "-m", "mlx_mobilemoe.generate", "--model", str(folder),
                        "--prompt", "hi", "--max-tokens", "6", "--temp", "0", "--kv-bits", "8"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "generation: 6 tokens" in r.stderr


def test_kv_bits_needs_head_dim_multiple_of_32(tiny_qat):
    r = subprocess.run([sys.executable, "-m", "mlx_mobilemoe.generate", "--model",
                        str(tiny_qat[0]), "--prompt", "hi", "--kv-bits", "8"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "head_dim" in r.stderr


@pytest.mark.skipif(not (checkpoint.DEFAULT_MODEL / "config.json").exists(),
                    reason="the bundled default model is not present")
def test_kv8_on_default_model_keeps_20_greedy_tokens():
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from mlx_mobilemoe.generate import kv_cache_options

    model, tok = load()
    for prompt in ("Define: harbor", "Hello, who are you?", "Continue this verse: In the beginning"):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                      add_generation_prompt=True, tokenize=True)
        runs = []
        for bits in (None, 8):
            kv = kv_cache_options(types.SimpleNamespace(kv_bits=bits), model.args.head_dim)
            runs.append([r.token for r in stream_generate(
                model, tok, ids, max_tokens=20, sampler=make_sampler(temp=0.0),
                **kv)])
        assert runs[0] == runs[1], prompt
