"""The whole decode step as one compiled graph (opt-in: MLX_MOBILEMOE_STEP=1).

mlx-lm's `generate_step` calls `model(tokens (1, 1), cache=[KVCache] * L)` once per token,
and built op by op that step costs Python graph building for every op of every layer. Here
the model's own forward (`Model.forward`, the same code) is traced once with a stand-in
cache, `StepCache`, whose offset is an array: it writes the new key and value into the
`KVCache`'s preallocated buffers with `mx.slice_update` at that offset and lets attention
read the whole buffer with a mask of the positions <= offset. A decode step then replays
the traced graph. The graph depends on the buffers' capacity (mlx-lm grows them 256
positions at a time), so it is traced again only when they grow.

The compiled function takes the model's arrays as inputs (`mx.compile(..., inputs=model)`),
so later weight changes are seen; only the module structure and Python scalars are baked
into a trace (a model keys its traces by `structure_key()`).

`applies(...)` says whether a call qualifies; `decode_step(model, tokens, cache)` then
returns the logits and advances the caches. The op-by-op forward stays the reference:
tests/test_decode_step.py compares both (greedy tokens identical, logits within float32
rounding).
"""

from __future__ import annotations

import os

import mlx.core as mx
from mlx_lm.models.cache import KVCache


def disabled() -> bool:
    """The compiled step runs only with MLX_MOBILEMOE_STEP=1. Off by default: on an H200
    (MLX 0.32.4 CUDA, 2026-12-01, docs/gpu-logs/levers-h200.json) it decoded *slower* than
    the op-by-op path (S 208 vs 236 tok/s, the dense 1B 204 vs 236): there a decode token is
    bound by per-primitive evaluation cost, which replaying a trace does not remove, and the
    step's array mask keeps CUDA's sdpa off its fused single-query kernel (MLX source). It
    is kept, tested, for backends where Python graph building is the bound (not measured
    yet: Apple GPUs). docs/sparsity-speed.md has the numbers."""
    return os.environ.get("MLX_MOBILEMOE_STEP", "0") in ("", "0")


class StepCache:
    """Stand-in for a `KVCache` inside the traced step: full buffers, array offset."""

    def __init__(self, keys: mx.array, values: mx.array, offset: mx.array):
        self.keys, self.values, self.offset = keys, values, offset  # offset: int32 scalar

    def update_and_fetch(self, keys, values):
        start = self.offset.reshape(1)
        self.keys = mx.slice_update(self.keys, keys, start, axes=(2,))
        self.values = mx.slice_update(self.values, values, start, axes=(2,))
        return self.keys, self.values

    def make_mask(self, N: int, return_array: bool = False, window_size=None):
        if N != 1 or window_size is not None:
            raise ValueError("StepCache serves single-token steps without a window")
        cap = self.keys.shape[2]
        return (mx.arange(cap) <= self.offset).reshape(1, 1, 1, cap)


def applies(inputs: mx.array, cache, input_embeddings) -> bool:
    """One token per row of a batch of one, plain KVCaches that already hold keys, and the
    switch on. Anything else (prefill, quantized or rotating caches, embeddings) runs the
    op-by-op forward."""
    if disabled() or input_embeddings is not None or cache is None:
        return False
    if inputs.ndim != 2 or inputs.shape != (1, 1):
        return False
    return (all(type(c) is KVCache and c.keys is not None for c in cache)
            and len({c.offset for c in cache}) == 1)


def _grow(c: KVCache) -> None:
    """Make room for one more position (as KVCache.update_and_fetch would)."""
    if c.offset + 1 <= c.keys.shape[2]:
        return
    B, n, _, d = c.keys.shape
    pad = (B, n, c.step, d)
    keys, values = c.keys[..., :c.offset, :], c.values[..., :c.offset, :]
    c.keys = mx.concatenate([keys, mx.zeros(pad, keys.dtype)], axis=2)
    c.values = mx.concatenate([values, mx.zeros((B, n, c.step, c.values.shape[3]),
                                                 values.dtype)], axis=2)


class _Compiled:
    """The traced step of one model (held by the model; rebuilt when its structure changes)."""

    def __init__(self, model, key):
        self.key = key

        def step(tokens, offset, keys, values):
            caches = [StepCache(k, v, offset) for k, v in zip(keys, values)]
            logits = model.forward(tokens, caches)
            return logits, [c.keys for c in caches], [c.values for c in caches]

        self.fn = mx.compile(step, inputs=model, outputs=None)


def decode_step(model, inputs: mx.array, cache: list) -> mx.array:
    """Logits (1, 1, V) of the next position; updates `cache` (keys, values, offset)."""
    key = model.structure_key()
    comp = model.__dict__.get("_step_fn")
    if comp is None or comp.key != key:
        comp = _Compiled(model, key)
        object.__setattr__(model, "_step_fn", comp)
    for c in cache:
        _grow(c)
    offset = mx.array(cache[0].offset, dtype=mx.int32)
    logits, keys, values = comp.fn(inputs, offset, [c.keys for c in cache],
                                   [c.values for c in cache])
    for c, k, v in zip(cache, keys, values):
        c.keys, c.values = k, v
        c.offset += 1
    return logits

