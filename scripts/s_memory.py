"""Load a random MobileMoE-S QAT checkpoint and report the model's parameter memory as JSON.

The checkpoint is written to a temporary folder in the official layout (random int4 bytes,
random fp16 scales) and deleted afterwards. Official MobileMoE-S-QAT: 0.714 GB on disk.
Usage: python scripts/s_memory.py [--preset S|M|L]
"""

import argparse
import json
import tempfile
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from mlx_mobilemoe import load_model, save
from mlx_mobilemoe.config import QAT_QUANTIZATION, preset
from mlx_mobilemoe.model import Model


def randomize(model):
    new = []
    for name, p in tree_flatten(model.parameters()):
        if p.dtype == mx.uint32:
            p = mx.random.randint(0, 2**31, p.shape).astype(mx.uint32)
        elif name.endswith("scales"):
            p = mx.random.uniform(0.005, 0.02, p.shape).astype(mx.float16)
        elif name.endswith("biases"):
            continue
        else:
            p = mx.random.normal(p.shape).astype(p.dtype) * 0.02
        new.append((name, p))
    model.load_weights(new, strict=False)
    for layer in model.layers:  # keep biases = -8 * scales, as the format implies
        for m in layer.modules():
            if hasattr(m, "biases") and m.biases is not None:
                m.biases = -8 * m.scales
    mx.eval(model.parameters())


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="S")
    a = ap.parse_args()
    args = preset(a.preset, quantization=dict(QAT_QUANTIZATION))
    with tempfile.TemporaryDirectory() as tmp:
        m = Model(args)
        randomize(m)
        save(m, None, Path(tmp) / "ckpt")
        del m
        file_bytes = sum(f.stat().st_size for f in (Path(tmp) / "ckpt").glob("*.safetensors"))
        mx.reset_peak_memory()
        model = load_model(Path(tmp) / "ckpt")
        param_bytes = sum(p.nbytes for _, p in tree_flatten(model.parameters()))
        peak = mx.get_peak_memory()
    print(json.dumps({
        "preset": a.preset,
        "checkpoint_file_gb": round(file_bytes / 1e9, 4),
        "parameters_gb": round(param_bytes / 1e9, 4),
        "peak_memory_during_load_gb": round(peak / 1e9, 4),
        "limit_gb": 0.80,
        "within_limit": param_bytes / 1e9 <= 0.80,
    }, indent=2))


if __name__ == "__main__":
    main()
