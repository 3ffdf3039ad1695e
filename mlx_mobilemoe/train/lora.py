"""LoRA on attention and on the routed experts themselves, and fusing it back.

The usual failure of MoE LoRA is adapters that never reach the experts (only the attention
and dense linears get wrapped). Here every routed expert gets its own adapter pair:
A [E, in, r], B [E, r, out] next to the frozen [E, in, out] weight, applied with the same
gather (dropless) or batched (drop-and-pad) matmul as the base weight.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tuner.lora import LoRALinear

from ..model import Model, module_slots
from ..moe import ExpertLinear

TARGETS = ("attention", "experts", "shared_expert")


class LoRAExpertLinear(nn.Module):
    """A frozen `ExpertLinear` plus per-expert low-rank adapters (B starts at zero)."""

    def __init__(self, base: ExpertLinear, r: int, scale: float):
        super().__init__()
        E, d_in, d_out = base.weight.shape
        self.base = base
        self.base.freeze()
        self.scale = scale
        bound = 1 / math.sqrt(d_in)
        self.lora_a = mx.random.uniform(-bound, bound, (E, d_in, r))
        self.lora_b = mx.zeros((E, r, d_out))

    def __call__(self, x, indices, sorted_indices=False):
        y = self.base(x, indices, sorted_indices=sorted_indices)
        a = mx.gather_mm(x, self.lora_a, rhs_indices=indices, sorted_indices=sorted_indices)
        z = mx.gather_mm(a, self.lora_b, rhs_indices=indices, sorted_indices=sorted_indices)
        return y + self.scale * z.astype(y.dtype)

    def bmm(self, xe):  # xe (E, C, in): every expert at once (drop-and-pad dispatch)
        return xe @ self.base.weight + self.scale * ((xe @ self.lora_a) @ self.lora_b)

    def fuse(self) -> ExpertLinear:
        w = self.base.weight
        fused = ExpertLinear(*w.shape)
        fused.weight = (w + self.scale * (self.lora_a @ self.lora_b)).astype(w.dtype)
        return fused


def apply_lora(model: Model, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               targets=("attention", "experts")) -> Model:
    """Freeze the model and add adapters to `targets` (in place). Returns the model."""
    bad = sorted(set(targets) - set(TARGETS))
    if bad:
        raise ValueError(f"unknown LoRA target(s) {bad}; choose from {list(TARGETS)}")
    if model.args.is_quantized:
        raise ValueError("LoRA here trains float checkpoints; load the BF16 checkpoint (QAT "
                         "comes after fusing)")
    scale = alpha / rank
    model.freeze()
    for _, parent, name, group in list(module_slots(model)):
        if group not in targets:
            continue
        base = getattr(parent, name)
        if group == "experts":
            setattr(parent, name, LoRAExpertLinear(base, rank, scale))
        else:
            setattr(parent, name, LoRALinear.from_base(base, r=rank, dropout=dropout,
                                                       scale=scale))
    return model


def _lora_slots(model: Model):
    """(parent module, attribute, adapter) for every adapter in the model."""
    for _, parent, name, _ in module_slots(model):
        sub = getattr(parent, name)
        if isinstance(sub, (LoRALinear, LoRAExpertLinear)):
            yield parent, name, sub


def fuse_lora(model: Model) -> Model:
    """Replace every adapter by its fused linear (in place); the result is a plain Model."""
    for mod, n, sub in list(_lora_slots(model)):
        setattr(mod, n, sub.fuse())
    model.unfreeze()
    model.freeze(keys=["expert_bias"])
    return model


@contextmanager
def fused_view(model: Model):
    """The model with adapters fused for the duration of the block, then put back."""
    slots = list(_lora_slots(model))
    for mod, n, sub in slots:
        setattr(mod, n, sub.fuse())
    try:
        yield model
    finally:
        for mod, n, sub in slots:
            setattr(mod, n, sub)


def has_lora(model: Model) -> bool:
    return any(isinstance(m, (LoRALinear, LoRAExpertLinear)) for _, m in model.named_modules())
