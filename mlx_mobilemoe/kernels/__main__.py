"""python -m mlx_mobilemoe.kernels: rewrite the sources generated from kernels/table.py
(kernels/moe_kernels.metal and the Swift launch table); then run swift/sync-kernels.sh."""

from .table import write_generated

write_generated()
