"""Fused kernels: one body text in kernels/ (repository root) for Metal and CUDA, built and launched on weights
views. The plain-MLX forward they replace lives with the MoE block (mlx_mobilemoe/moe.py).
Set MLX_MOBILEMOE_REFERENCE=1 to run the plain-MLX forward everywhere."""

from ._build import gpu_backend, reference_forced
from .moe import KernelError, MoEWeights, Plan, QWeight, moe_ffn, plan

__all__ = ["KernelError", "MoEWeights", "Plan", "QWeight", "gpu_backend", "moe_ffn", "plan",
           "reference_forced"]
