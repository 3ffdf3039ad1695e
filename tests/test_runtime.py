from mlx_mobilemoe.runtime import slow_blas

WHEEL = "7f-7f r-xp 0 fe:00 1 /site-packages/mlx_cpu.libs/libblas-bd8a282c.so.3.10.0\n"
NUMPY = "7f-7f r-xp 0 fe:00 2 /site-packages/numpy.libs/libscipy_openblas64_-32a4.so\n"
SYSTEM = "7f-7f r-xp 0 fe:00 3 /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3\n"


def test_slow_blas_is_the_wheels_reference_blas_without_openblas():
    assert slow_blas(WHEEL)
    assert slow_blas(WHEEL + NUMPY)  # numpy's OpenBLAS has other symbol names: no help
    assert not slow_blas(WHEEL + SYSTEM)  # preloaded OpenBLAS answers MLX's calls
    assert not slow_blas(SYSTEM)
