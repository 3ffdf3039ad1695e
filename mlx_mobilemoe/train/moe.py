"""MoE training mechanics beyond the forward pass: aux-loss-free balancing of the selection
biases and a summary of the expert load. The training forward is `Model.__call__` with
`MoEOptions` (dispatch "dropless" or "drop", router statistics): mlx_mobilemoe/moe.py."""

from __future__ import annotations

import mlx.core as mx

from ..model import Model


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
