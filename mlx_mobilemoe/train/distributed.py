"""Data parallel over several Macs (or processes) with MLX's own `mx.distributed`.

Start with `mlx.launch` (e.g. `mlx.launch -n 2 --backend ring -- python -m
mlx_mobilemoe.train stage.yaml`, or a hostfile listing the Macs). Every rank builds the
same model from the same seed, reads its slice of each global batch, and the summed
gradients (and router loads) are all-reduced, so every rank applies the same update.
Only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten


class World:
    def __init__(self):
        self.group = mx.distributed.init() if mx.distributed.is_available() else None
        self.size = self.group.size() if self.group is not None else 1
        self.rank = self.group.rank() if self.group is not None else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum_tree(self, tree):
        """All-reduce (sum) every array of a tree in one flat buffer."""
        if self.size == 1:
            return tree
        flat = tree_flatten(tree)
        if not flat:
            return tree
        shapes = [v.shape for _, v in flat]
        buf = mx.concatenate([v.astype(mx.float32).reshape(-1) for _, v in flat])
        buf = mx.distributed.all_sum(buf, group=self.group)
        out, i = [], 0
        for (k, v), s in zip(flat, shapes):
            n = v.size
            out.append((k, buf[i:i + n].reshape(s).astype(v.dtype)))
            i += n
        return tree_unflatten(out)

    def barrier(self):
        if self.size > 1:
            mx.eval(mx.distributed.all_sum(mx.array(0.0), group=self.group))
