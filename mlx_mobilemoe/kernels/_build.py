"""Build the fused kernels for Metal or CUDA from the one body text in kernels/.

A kernel is the shim header of its backend (kernels/mm_metal.h or kernels/mm_cuda.h) plus
the shared bodies (kernels/moe_*.h) as `header`, and as `source` a backend prologue (thread ids
from the backend's own names) followed by a few lines of glue that declare threadgroup
memory and call the body. `mx.fast.metal_kernel` and `mx.fast.cuda_kernel` take the same
arguments, so everything else is common.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import mlx.core as mx

THREADS = 256  # MM_NT in kernels/moe_common.h: every kernel runs threadgroups of 256


# Thread ids by the backend's own names (Metal declares an attribute only when the source
# mentions it, so these must be in `source`, not in a header macro).
PROLOGUE = {
    "metal": ("const uint32_t mm_tid = thread_position_in_threadgroup.x;\n"
              "const uint32_t mm_gid = threadgroup_position_in_grid.x;\n"
              "const uint32_t mm_lane = thread_index_in_simdgroup;\n"
              "const uint32_t mm_warp = simdgroup_index_in_threadgroup;\n"),
    "cuda": ("const uint32_t mm_tid = threadIdx.x;\n"
             "const uint32_t mm_gid = blockIdx.x;\n"
             "const uint32_t mm_lane = threadIdx.x & 31u;\n"
             "const uint32_t mm_warp = threadIdx.x >> 5;\n"),
}
_SHIM = {"metal": "mm_metal.h", "cuda": "mm_cuda.h"}
_FACTORY: dict[str, Callable] = {
    "metal": lambda name, inputs, outputs, source, header: mx.fast.metal_kernel(
        name=name, input_names=inputs, output_names=outputs, source=source, header=header),
    "cuda": lambda name, inputs, outputs, source, header: mx.fast.cuda_kernel(
        name=name, input_names=inputs, output_names=outputs, source=source, header=header),
}
_CACHE: dict = {}


def source_dir() -> Path:
    """Where the kernel sources live: the repository's kernels/ (or the wheel's copy)."""
    here = Path(__file__).resolve().parent
    for d in (here.parents[1] / "kernels", here / "src"):  # repository, or installed wheel
        if (d / "moe_common.h").exists():
            return d
    raise FileNotFoundError("kernel sources (kernels/moe_common.h) not found")


def read_source(name: str) -> str:
    return (source_dir() / name).read_text()


def compact(text: str) -> str:
    """Source without comment-only and blank lines: MLX copies the header on every call."""
    return "".join(l + "\n" for l in text.splitlines()
                   if l.strip() and not l.lstrip().startswith("//"))  # ends with a newline


def _switch(name: str) -> bool:
    """An on/off environment switch: set and not "0"."""
    return os.environ.get(name, "0") not in ("", "0")


def reference_forced() -> bool:
    """MLX_MOBILEMOE_REFERENCE=1 forces the plain-MLX reference everywhere."""
    return _switch("MLX_MOBILEMOE_REFERENCE")


def eager() -> bool:
    """MLX_MOBILEMOE_EAGER=1 builds the decode path op by op each call instead of replaying
    an `mx.compile`d graph (for comparison and debugging; same kernels, same numbers)."""
    return _switch("MLX_MOBILEMOE_EAGER")


_GPU = "metal" if mx.metal.is_available() else (
    "cuda" if hasattr(mx, "cuda") and mx.cuda.is_available() else None)


def gpu_backend() -> Optional[str]:
    """'metal' or 'cuda' when the default device is a GPU that can run custom kernels."""
    if _GPU is None or reference_forced() or mx.default_device() != mx.gpu:
        return None
    return _GPU


_COMPILABLE = {"metal", "cuda"}  # kernels that are MLX primitives, so mx.compile can trace them


def register_backend(name: str, factory: Callable, prologue: str, shim: str) -> None:
    """Add a backend (the tests' CPU emulator): factory(name, inputs, outputs, source, header).
    Its kernels run eagerly (outside mx.compile): an emulator computes on concrete arrays."""
    _FACTORY[name], PROLOGUE[name], _SHIM[name] = factory, prologue, shim


def compiled_decode(backend: str) -> bool:
    """Whether the decode path replays an mx.compile'd graph on this backend."""
    return backend in _COMPILABLE and not eager()


def kernel(backend: str, name: str, inputs: list[str], outputs: list[str], glue: str,
           bodies: tuple[str, ...]):
    """The kernel `name` for `backend`, built once: shim + bodies as header, prologue + glue."""
    key = (backend, name)
    if key not in _CACHE:
        header = compact("\n".join(read_source(f) for f in (_SHIM[backend], *bodies)))
        _CACHE[key] = _FACTORY[backend](
            f"mobilemoe_{name}", inputs, outputs, PROLOGUE[backend] + glue, header)
    return _CACHE[key]


def launch(k, inputs, outputs, groups: int, template):
    """Run `k` on `groups` threadgroups of THREADS threads. outputs: [(shape, dtype)]."""
    return k(inputs=inputs, output_shapes=[s for s, _ in outputs],
             output_dtypes=[d for _, d in outputs], grid=(groups * THREADS, 1, 1),
             threadgroup=(THREADS, 1, 1), template=template)
