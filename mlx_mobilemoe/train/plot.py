"""Plot a run's expert load from its metrics.jsonl (needs matplotlib).

python -m mlx_mobilemoe.train.plot runs/x/metrics.jsonl load.png
Top: max/mean load per layer over training (1.0 = perfectly balanced). Bottom: each
expert's share of the selections in every layer over the last 10% of steps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def read_steps(metrics: Path) -> list:
    return [r for r in map(json.loads, Path(metrics).read_text().splitlines())
            if "load" in r and "eval" not in r]


def plot_expert_load(metrics, png, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_steps(metrics)
    if not recs:
        raise ValueError(f"{metrics}: no steps with expert load")
    steps = np.array([r["step"] for r in recs])
    load = np.array([r["load"] for r in recs], dtype=np.float64)  # (S, L, E)
    ratio = load.max(-1) / np.maximum(load.mean(-1), 1e-9)  # (S, L)
    tail = load[-max(1, len(recs) // 10):].sum(0)
    share = tail / tail.sum(-1, keepdims=True)  # (L, E)
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 7), gridspec_kw={"height_ratios": [1, 1.2]})
    k = max(1, len(steps) // 200)  # smooth for readability
    for layer in range(ratio.shape[1]):
        r = np.convolve(ratio[:, layer], np.ones(k) / k, mode="valid")
        a.plot(steps[k - 1:], r, lw=1, label=f"layer {layer}")
    a.axhline(1.0, color="k", lw=0.5)
    a.set_xlabel("step")
    a.set_ylabel("max / mean expert load")
    a.set_yscale("log")
    a.legend(fontsize=7, ncol=4)
    a.set_title(title or "expert load balance")
    im = b.imshow(share, aspect="auto", cmap="viridis")
    b.set_xlabel("expert")
    b.set_ylabel("layer")
    b.set_title(f"share of selections, last {max(1, len(recs) // 10)} steps "
                f"(uniform = {1 / share.shape[1]:.3f})")
    fig.colorbar(im, ax=b)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(plot_expert_load(sys.argv[1], sys.argv[2]))
