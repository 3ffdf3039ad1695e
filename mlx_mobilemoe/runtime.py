"""Facts about the machine a CLI tells the user once: today, a slow BLAS on Linux."""

from __future__ import annotations

import sys
from pathlib import Path

OPENBLAS_HINT = (
    "note: MLX on this Linux CPU uses the reference BLAS bundled with its wheel; float "
    "matmuls run several times faster with OpenBLAS: `apt-get install libopenblas0-pthread`, "
    "then run with LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 "
    "(same results)")


def slow_blas(maps: str | None = None) -> bool:
    """True when the process runs MLX on the CPU with the wheel's reference BLAS (Linux)."""
    if maps is None:
        if not sys.platform.startswith("linux"):
            return False
        import mlx.core as mx
        if mx.default_device().type != mx.cpu:
            return False
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return False
    libs = {line.split()[-1] for line in maps.splitlines() if ".so" in line}
    # numpy's bundled scipy_openblas has its own symbol names: MLX cannot use it.
    fast = any("openblas" in p.lower() and "scipy_openblas" not in p for p in libs)
    return any("mlx_cpu.libs/libblas" in p for p in libs) and not fast


def blas_hint(stream=None) -> None:
    """Print OPENBLAS_HINT to stderr when slow_blas()."""
    if slow_blas():
        print(OPENBLAS_HINT, file=stream or sys.stderr)
