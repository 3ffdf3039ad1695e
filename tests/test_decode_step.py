"""The compiled decode step (mlx_mobilemoe/decode_step.py) against the op-by-op forward:
same greedy tokens, logits within float32 rounding, on every backend (CPU here)."""

import os

import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import KVCache, QuantizedKVCache

from mlx_mobilemoe import Model, decode_step, preset
from mlx_mobilemoe.model import quantize_model


def _model(quantized=False, seed=0):
    mx.random.seed(seed)
    m = Model(preset("tiny"))
    if quantized:
        quantize_model(m)
    mx.eval(m.parameters())
    return m


def _generate(model, prompt, n, step: bool):
    os.environ["MLX_MOBILEMOE_STEP"] = "1" if step else "0"
    try:
        out = list(generate_step(prompt, model, max_tokens=n))
    finally:
        os.environ.pop("MLX_MOBILEMOE_STEP", None)
    return [int(t) for t, _ in out], mx.stack([lp for _, lp in out])


def _counting(monkeypatch):
    calls = []
    real = decode_step.decode_step
    monkeypatch.setattr(decode_step, "decode_step", lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("quantized", [False, True])
def test_step_matches_op_by_op_across_cache_growth(quantized, monkeypatch):
    """A 250-token prompt and 12 tokens: the step crosses KVCache's 256-position boundary
    (the buffers grow and the step is traced again)."""
    model = _model(quantized)
    prompt = mx.random.randint(0, 300, (250,))
    calls = _counting(monkeypatch)
    toks, lps = _generate(model, prompt, 12, step=True)
    assert len(calls) >= 11  # every single-token step went through the compiled step
    ref_toks, ref_lps = _generate(model, prompt, 12, step=False)
    assert toks == ref_toks
    assert mx.abs(lps - ref_lps).max().item() < 1e-4


def test_step_sees_weight_and_top_k_changes():
    """The traced graph takes the model's arrays as inputs (new weights are used) and is
    rebuilt when a baked-in scalar (experts per token) changes."""
    model, other = _model(seed=0), _model(seed=1)
    prompt = mx.random.randint(0, 300, (9,))
    _generate(model, prompt, 3, step=True)  # traced with the first weights
    model.update(other.parameters())
    toks, lps = _generate(model, prompt, 6, step=True)
    ref_toks, ref_lps = _generate(other, prompt, 6, step=False)
    assert toks == ref_toks and mx.abs(lps - ref_lps).max().item() < 1e-4
    model.set_experts_per_token(1)
    toks, lps = _generate(model, prompt, 6, step=True)
    ref_toks, ref_lps = _generate(model, prompt, 6, step=False)
    assert toks == ref_toks and mx.abs(lps - ref_lps).max().item() < 1e-4


def test_step_applies_only_to_single_tokens_on_plain_kv_caches(monkeypatch):
    model = _model()
    one = mx.array([[3]])
    filled = model.make_cache()
    model(mx.array([[1, 2]]), cache=filled)
    assert not decode_step.applies(one, filled, None)  # off unless asked for
    monkeypatch.setenv("MLX_MOBILEMOE_STEP", "1")
    assert decode_step.applies(one, filled, None)
    assert not decode_step.applies(mx.array([[3, 4]]), filled, None)  # prefill
    assert not decode_step.applies(one, model.make_cache(), None)  # empty cache
    assert not decode_step.applies(one, None, None)
    assert not decode_step.applies(one, filled, mx.zeros((1, 1, 64)))
    q = QuantizedKVCache(group_size=16, bits=8)
    assert not decode_step.applies(one, [q] * len(filled), None)
    assert all(type(c) is KVCache for c in filled)
