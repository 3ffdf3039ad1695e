"""Fused kernels: one body text in metal/ for Metal and CUDA, a plain-MLX reference, and a
dispatcher per op. Set MLX_MOBILEMOE_REFERENCE=1 to force the reference everywhere."""

from ._build import gpu_backend, reference_forced
from .moe import (MoEWeights, QWeight, fused_moe, moe_ffn, moe_ffn_reference, moe_path,
                  route_reference, weights_from_module)

__all__ = ["MoEWeights", "QWeight", "fused_moe", "gpu_backend", "moe_ffn",
           "moe_ffn_reference", "moe_path", "reference_forced", "route_reference", "weights_from_module"]
