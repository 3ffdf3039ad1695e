import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import official  # noqa: E402

CORPUS = ("First Citizen: Before we proceed any further, hear me speak.\n"
          "All: Speak, speak. You are all resolved rather to die than to famish?\n"
          "def main(argv):\n    return sum(x * 2 for x in range(10))\n"
          "Ünïcödé café naïve 日本語 テキスト 😀 emoji\n") * 20


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from mlx_mobilemoe.tokenizer import train_tokenizer
    return train_tokenizer([CORPUS], 320, tmp_path_factory.mktemp("tok"))


def add_tokenizer(folder, tokenizer_dir):
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tokenizer_dir) / f, Path(folder) / f)
    return folder


@pytest.fixture
def tiny_qat(tmp_path, tokenizer_dir):
    """A tiny checkpoint in the official QAT layout, written by the independent writer."""
    d = tmp_path / "tiny-qat"
    tensors = official.write_checkpoint(d, official.TINY, qat=True, seed=1)
    add_tokenizer(d, tokenizer_dir)
    return d, tensors


def pytest_terminal_summary(terminalreporter):
    """Say why tests were skipped: most need a GPU, which CI and Linux laptops do not have."""
    skipped = terminalreporter.stats.get("skipped", [])
    gpu = sum(1 for r in skipped if "GPU" in str(r.longrepr))
    if gpu:
        import mlx.core as mx
        terminalreporter.write_line(
            f"{gpu} skipped test(s) need a Metal or CUDA GPU (MLX runs on "
            f"{mx.default_device()} here): the fused-kernel parity suite. Run "
            "`python -m pytest tests/test_kernels.py` on a Mac or with mlx[cuda]; the last GPU "
            "logs are in docs/gpu-logs/.")
