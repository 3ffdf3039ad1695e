from mlx_mobilemoe.runtime import slow_blas

WHEEL = "7f-7f r-xp 0 fe:00 1 /site-packages/mlx_cpu.libs/libblas-bd8a282c.so.3.10.0\n"
NUMPY = "7f-7f r-xp 0 fe:00 2 /site-packages/numpy.libs/libscipy_openblas64_-32a4.so\n"
SYSTEM = "7f-7f r-xp 0 fe:00 3 /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3\n"


def test_slow_blas_is_the_wheels_reference_blas_without_openblas():
    assert slow_blas(WHEEL)
    assert slow_blas(WHEEL + NUMPY)  # numpy's OpenBLAS has other symbol names: no help
    assert not slow_blas(WHEEL + SYSTEM)  # preloaded OpenBLAS answers MLX's calls
    assert not slow_blas(SYSTEM)


def _run(env_extra):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MLX_MOBILEMOE_BLAS")}
    env.update(env_extra)
    code = ("from mlx_mobilemoe.runtime import fast_blas, slow_blas; fast_blas(); "
            "print('slow' if slow_blas() else 'fast')")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_shell_command_restarts_itself_with_the_system_openblas():
    import pytest

    from mlx_mobilemoe.runtime import system_openblas
    kept = _run({"MLX_MOBILEMOE_BLAS": "reference"})
    assert kept.returncode == 0, kept.stderr
    if kept.stdout.strip() != "slow":
        pytest.skip("MLX here does not use the wheel's reference BLAS (not Linux CPU)")
    assert kept.stderr == ""  # kept on request: no restart, no note
    r = _run({})
    assert r.returncode == 0, r.stderr
    if system_openblas():
        assert r.stdout.strip() == "fast" and "restarting with the system OpenBLAS" in r.stderr
    else:
        assert r.stdout.strip() == "slow" and "apt-get install libopenblas0-pthread" in r.stderr
