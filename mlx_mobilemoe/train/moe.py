"""MoE training mechanics: a training forward over `Model` with router statistics.

The forward reuses the model's layers, `MoE.route` and the experts' weights; only the
dispatch differs from inference:
- "dropless": every token reaches its k experts (the model's own `Experts` gather path).
- "drop": drop-and-pad. Each expert takes at most C = ceil(capacity_factor * N * k / E)
  tokens of the micro-batch (earlier tokens first); the rest of its assignments are dropped
  (their combine weight becomes 0, the shared expert and the residual still carry them) and
  empty slots are padding. The experts then run as one batched matmul over [E, C, H].
Statistics per layer: selection counts (the load, before any drop), dropped assignments,
router z-loss (mean logsumexp(logits)^2) and the Switch auxiliary loss E * sum(f_i * P_i).
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from ..model import ExpertLinear, Model


def _expert_bmm(lin, xe):
    """xe (E, C, in) through every expert of `lin` at once -> (E, C, out)."""
    if type(lin) is ExpertLinear:
        return xe @ lin.weight
    if hasattr(lin, "bmm"):
        return lin.bmm(xe)
    # Any other expert linear with the gather interface (quantized, fake-quant, ...).
    E, C, d = xe.shape
    idx = mx.repeat(mx.arange(E, dtype=mx.uint32), C)
    y = lin(xe.reshape(E * C, 1, d), idx, sorted_indices=True)
    return y.reshape(E, C, -1)


def drop_and_pad(experts, x, idx, capacity_factor: float):
    """x (N, H), idx (N, k) -> expert outputs (N, k, H) and keep mask (N, k) float32."""
    N, k = idx.shape
    E = experts.gate_up.weight.shape[0]
    C = max(1, math.ceil(capacity_factor * N * k / E))
    flat = idx.reshape(-1)  # (N*k,), token-major: earlier tokens claim slots first
    onehot = (flat[:, None] == mx.arange(E, dtype=flat.dtype)).astype(mx.int32)  # (Nk, E)
    pos = ((mx.cumsum(onehot, axis=0) * onehot).sum(-1) - 1)  # rank of the assignment
    keep = pos < C
    slot = mx.where(keep, flat.astype(mx.int32) * C + pos, E * C)  # E*C: the drop bin
    token = mx.arange(N * k, dtype=mx.int32) // k
    src = mx.zeros((E * C + 1,), mx.int32).at[slot].add(mx.where(keep, token, 0))
    src = mx.stop_gradient(src[: E * C])  # empty slots read token 0: padding, never gathered
    xe = x[src].reshape(E, C, -1)  # (E, C, H)
    g, u = mx.split(_expert_bmm(experts.gate_up, xe), 2, axis=-1)
    y = _expert_bmm(experts.down, nn.silu(g) * u).reshape(E * C, -1)  # (E*C, H)
    y = mx.concatenate([y, mx.zeros((1, y.shape[-1]), y.dtype)])
    return y[mx.stop_gradient(slot)].reshape(N, k, -1), keep.reshape(N, k).astype(mx.float32)


def moe_forward(moe, x, dispatch: str = "dropless", capacity_factor: float = 1.25,
                with_stats: bool = True):
    """Training forward of one `MoE` block. x (..., H) -> (out, stats or None)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    idx, w = moe.route(x2)  # (N, k) uint32 (stop_gradient inside), float32
    if dispatch == "drop":
        y, keep = drop_and_pad(moe.experts, x2, idx, capacity_factor)
        w = w * keep
    else:
        y = moe.experts(x2, idx)
        keep = None
    out = (y * w[..., None].astype(y.dtype)).sum(axis=-2).astype(x.dtype)
    if moe.shared_expert is not None:
        out = out + moe.shared_expert(x2)
    out = out.reshape(shape)
    if not with_stats:
        return out, None
    E = moe.expert_bias.shape[0]
    logits = moe.router(x2.astype(mx.float32))  # (N, E)
    counts = (idx.reshape(-1)[:, None] == mx.arange(E, dtype=idx.dtype)).sum(0)
    counts = mx.stop_gradient(counts.astype(mx.float32))  # selections per expert
    z = (mx.logsumexp(logits, axis=-1) ** 2).mean()
    s = mx.sigmoid(logits)
    p = (s / s.sum(-1, keepdims=True)).mean(0)  # mean routing probability per expert
    f = counts / counts.sum()
    aux = E * (f * p).sum()
    dropped = mx.stop_gradient(keep.size - keep.sum()) if keep is not None else mx.array(0.0)
    return out, {"load": counts, "dropped": dropped, "z": z, "aux": aux}


def forward(model: Model, tokens, dispatch: str = "dropless", capacity_factor: float = 1.25,
            with_stats: bool = True):
    """Logits (B, T, V) and stacked stats {load (L, E), dropped (L,), z (L,), aux (L,)}.

    Same block as `DecoderLayer.__call__` (DESIGN.md §4) with the MoE swapped for
    `moe_forward`; with dispatch="dropless" it equals `model(tokens)`."""
    from mlx_lm.models.base import create_attention_mask

    m = model.model
    h = m.embed(tokens, model.compute_dtype).astype(model.compute_dtype)
    mask = create_attention_mask(h, None)
    stats = []
    for layer in m.layers:
        h = h + layer.self_attn(layer.input_layernorm(h), mask, None)
        y, st = moe_forward(layer.feed_forward, layer.post_attention_layernorm(h), dispatch,
                            capacity_factor, with_stats)
        h = h + y
        stats.append(st)
    logits = m.embed_tokens.as_linear(m.norm(h))
    if not with_stats:
        return logits, None
    return logits, {k: mx.stack([s[k] for s in stats]) for k in stats[0]}


def balance_biases(model: Model, load, gamma: float) -> None:
    """Aux-loss-free balancing: move each expert's selection bias by gamma towards the mean
    load (up for under-loaded experts, down for over-loaded). load (L, E) selection counts."""
    if not gamma:
        return
    for layer, l in zip(model.layers, load):
        ff = layer.feed_forward
        ff.expert_bias = ff.expert_bias + gamma * mx.sign(l.mean() - l).astype(mx.float32)


def load_summary(load) -> dict:
    """Host-side summary of a (L, E) load array: max/mean per layer and overall."""
    import numpy as np

    a = np.asarray(load, dtype=np.float64)
    mean = a.mean(-1, keepdims=True)
    ratio = (a.max(-1) / np.maximum(mean[:, 0], 1e-9))
    return {"load_max_over_mean": float(ratio.max()),
            "load_max_over_mean_per_layer": [round(float(r), 4) for r in ratio]}
