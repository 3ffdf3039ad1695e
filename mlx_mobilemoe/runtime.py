"""Facts about the machine the command-line tools act on once: today, a slow BLAS on Linux.

MLX's Linux CPU wheel links a reference BLAS; float matmuls run several times faster (2-9x on
this project's quick start) with the system's OpenBLAS preloaded. A command run from the
shell (`main()` given no argv) that finds the reference BLAS and an installed OpenBLAS starts
itself again with it preloaded and says so; without one installed it says how to get it.
MLX_MOBILEMOE_BLAS=reference keeps the reference BLAS (no restart, no note).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SYSTEM_OPENBLAS = tuple(f"/usr/lib/{arch}-linux-gnu/openblas-pthread/libblas.so.3"
                        for arch in ("x86_64", "aarch64"))
ENV = "MLX_MOBILEMOE_BLAS"  # "reference": keep it; "openblas": set by the restart
OPENBLAS_HINT = (
    "note: MLX on this Linux CPU uses the reference BLAS bundled with its wheel; float "
    "matmuls run several times faster with OpenBLAS: `apt-get install libopenblas0-pthread` "
    "(the command then preloads it itself; or run with "
    "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3; same results)")


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


def system_openblas() -> str | None:
    """The installed OpenBLAS (Debian/Ubuntu's libopenblas0-pthread) MLX can use, if any."""
    return next((p for p in SYSTEM_OPENBLAS if Path(p).is_file()), None)


def restart_argv() -> list[str] | None:
    """The command line that started this process (`python -m ...` or a console script)."""
    argv = getattr(sys, "orig_argv", None)
    return list(argv) if argv else None


def fast_blas(argv=None, stream=None) -> None:
    """A command's `main(argv)` calls this first thing after parsing its arguments, passing
    the argv it was given. Run from the shell (argv None) on the wheel's reference BLAS, the
    command restarts with the system OpenBLAS preloaded (a note on `stream` says so), or
    prints OPENBLAS_HINT when none is installed. Given an argv (library code, tests), it does
    nothing: a restart replaces the process."""
    if argv is not None:
        return
    stream = stream or sys.stderr
    choice = os.environ.get(ENV, "")
    if choice == "reference" or not slow_blas():
        return
    lib, argv = system_openblas(), restart_argv()
    if choice == "openblas" or lib is None or argv is None:  # restarted, or nothing to use
        print(OPENBLAS_HINT, file=stream)
        return
    print(f"note: restarting with the system OpenBLAS ({lib}) for fast CPU matmuls; "
          f"{ENV}=reference keeps MLX's reference BLAS", file=stream, flush=True)
    env = dict(os.environ, **{ENV: "openblas"})
    env["LD_PRELOAD"] = " ".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)
