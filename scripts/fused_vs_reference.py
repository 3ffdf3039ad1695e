"""Greedy tokens of a model with the fused INT4 MoE kernels vs the plain-MLX reference path.

A float checkpoint (like the bundled default model) is first quantized to int4 g32 by
round-to-nearest, since the fused kernels run on int4 experts. Prints JSON. Needs a GPU
backend for the fused side (Metal or CUDA); on CPU both sides are the reference.
Usage: python scripts/fused_vs_reference.py [--model PATH] [--prompt TEXT] [--max-tokens N]
"""

import argparse
import json
import os

import mlx.core as mx
from mlx_lm.generate import generate_step

from mlx_mobilemoe import load
from mlx_mobilemoe.generate import DTYPES
from mlx_mobilemoe.kernels import gpu_backend
from mlx_mobilemoe.model import quantize_model


def greedy(model, prompt_ids, n, reference: bool):
    os.environ["MLX_MOBILEMOE_REFERENCE"] = "1" if reference else "0"
    try:
        steps = generate_step(mx.array(prompt_ids), model, max_tokens=n,
                              sampler=lambda logits: mx.argmax(logits, axis=-1))
        return [int(t) for t, _ in steps]
    finally:
        os.environ.pop("MLX_MOBILEMOE_REFERENCE", None)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--max-tokens", type=int, default=60)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    a = ap.parse_args()
    model, tok = load(a.model, dtype=DTYPES[a.dtype])
    quantized_here = not model.args.is_quantized
    if quantized_here:
        quantize_model(model)
        model.set_dtype(DTYPES[a.dtype])
    ids = tok.encode(a.prompt)
    fused = greedy(model, ids, a.max_tokens, reference=False)
    ref = greedy(model, ids, a.max_tokens, reference=True)
    diverge = next((i for i, (x, y) in enumerate(zip(fused, ref)) if x != y), None)
    print(json.dumps({
        "device": str(mx.default_device()), "gpu_backend": gpu_backend(),
        "model": a.model or "bundled default", "quantized_here_rtn": quantized_here,
        "dtype": a.dtype, "prompt": a.prompt, "tokens": len(fused),
        "identical": fused == ref, "first_divergence": diverge,
        "fused_text": tok.decode(fused), "reference_text": tok.decode(ref),
    }, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
