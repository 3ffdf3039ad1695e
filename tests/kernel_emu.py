"""Run the kernel bodies of kernels/ on the CPU: a third backend for tests, no GPU needed.

`EmuKernel` takes the same constructor and call arguments as `mx.fast.cuda_kernel` and
builds the same kernel text with kernels/mm_cpu.h as the shim: one std::thread per GPU
thread, one threadgroup at a time. It needs g++ with C++20 and is slow: tiny shapes only.
Outputs are poisoned (NaN / -1) before the run so that unwritten elements show.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_mobilemoe.kernels import _build

_CTYPE = {mx.float32: "float", mx.float16: "_Float16", mx.uint32: "uint32_t",
          mx.int32: "int32_t"}
_NP = {mx.float32: np.float32, mx.float16: np.float16, mx.uint32: np.uint32,
       mx.int32: np.int32}
PROLOGUE = ("const uint32_t mm_tid = mm_emu::tid;\nconst uint32_t mm_gid = mm_emu::gid;\n"
            "const uint32_t mm_lane = mm_emu::lane;\nconst uint32_t mm_warp = mm_emu::warp;\n")
_CACHE_DIR = Path(os.environ.get("MM_EMU_CACHE", Path(tempfile.gettempdir()) / "mm_emu"))


def available() -> bool:
    return shutil.which("g++") is not None


class EmuKernel:
    def __init__(self, name, input_names, output_names, source, header):
        self.name, self.inputs, self.outputs = name, input_names, output_names
        self.source, self.header = source, header

    def _library(self, in_dtypes, out_dtypes, template):
        lines = []
        for n, v in template:
            if isinstance(v, bool):
                lines.append(f"constexpr bool {n} = {'true' if v else 'false'};")
            elif isinstance(v, int):
                lines.append(f"constexpr int {n} = {v};")
            else:
                lines.append(f"using {n} = {_CTYPE[v]};")
        params = [f"const {_CTYPE[d]}* {n}" for n, d in zip(self.inputs, in_dtypes)]
        params += [f"{_CTYPE[d]}* {n}" for n, d in zip(self.outputs, out_dtypes)]
        casts = [f"({p.rsplit(' ', 1)[0]})b[{i}]" for i, p in enumerate(params)]
        lines.append(f"static void mm_body({', '.join(params)}) {{\n{self.source}\n}}")
        lines.append('extern "C" void mm_launch(void** b, int nb, int nt) {\n'
                     f"  mm_emu::launch(nb, nt, [&] {{ mm_body({', '.join(casts)}); }});\n}}")
        text = self.header + "\n".join(lines)  # as MLX joins them: no newline added after the header
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        so = _CACHE_DIR / f"{self.name}-{digest}.so"
        if not so.exists():
            _CACHE_DIR.mkdir(parents=True, exist_ok=True)
            src = so.with_suffix(".cpp")
            src.write_text(text)
            tmp = so.with_suffix(f".{os.getpid()}.so")
            subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-w",
                            "-o", str(tmp), str(src)], check=True)
            tmp.rename(so)
        lib = ctypes.CDLL(str(so))
        lib.mm_launch.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        return lib

    def __call__(self, *, inputs, output_shapes, output_dtypes, grid, threadgroup,
                 template=(), init_value=None, verbose=False, stream=None):
        ins = [np.ascontiguousarray(np.array(a)) for a in inputs]
        in_dtypes = [a.dtype for a in inputs]
        outs = []
        for shape, dt in zip(output_shapes, output_dtypes):
            fill = init_value if init_value is not None else (
                np.nan if dt in (mx.float32, mx.float16) else -1)
            outs.append(np.full(shape, fill, dtype=_NP[dt]))
        lib = self._library(in_dtypes, output_dtypes, template)
        ptrs = (ctypes.c_void_p * (len(ins) + len(outs)))(
            *[a.ctypes.data for a in ins + outs])
        assert grid[1] == grid[2] == 1 and grid[0] % threadgroup[0] == 0
        lib.mm_launch(ptrs, grid[0] // threadgroup[0], threadgroup[0])
        return [mx.array(o) for o in outs]


def register() -> None:
    """Make backend='cpu-emu' available to the kernels' dispatcher."""
    _build.register_backend("cpu-emu", EmuKernel, PROLOGUE, "mm_cpu.h")
