"""Recorded behaviour of the model code: greedy tokens of the bundled default model and
SHA-256 hashes of the logits (bytes) on the test checkpoints, for refactors that must not
change a single bit. tests/test_model.py compares `measure()` with behaviour.json, which
holds one record per CPU BLAS (the logits' last bits depend on it; recorded: the MLX wheel's
own and OpenBLAS, as CI preloads it).

    python tests/behaviour.py      # (re)record for this BLAS, only when a change of numbers
                                   # is intended (say so in the commit)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np

HERE = Path(__file__).parent
RECORD = HERE / "behaviour.json"
sys.path[:0] = [str(HERE), str(HERE.parent)]  # official.py; this checkout's package


def blas() -> str:
    """Which BLAS serves MLX's CPU matmuls (the logits' last bits depend on it, the tokens
    do not): one preloaded as CI does (.ci/run), or the MLX wheel's own."""
    pre = [p for p in os.environ.get("LD_PRELOAD", "").split(":") if "blas" in p]
    return f"preload-{Path(pre[0]).parent.name}" if pre else f"wheel-{sys.platform}"


def _hash(a) -> str:
    a = np.array(a.astype(mx.float32) if a.dtype == mx.bfloat16 else a)
    return hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()[:16]


def _tokens(vocab, n=24, seed=0):
    return mx.array(np.random.default_rng(seed).integers(0, vocab, (2, n)).astype(np.int32))


def _default_model(out):
    from mlx_lm.generate import generate_step
    from mlx_mobilemoe import checkpoint

    model, tok = checkpoint.load(None)
    prompt = mx.array(tok.encode("ROMEO:"))
    out["default.greedy"] = [int(t) for t, _ in generate_step(prompt, model, max_tokens=32)]
    out["default.logits"] = _hash(model(_tokens(model.args.vocab_size)))


def _official(out):
    import official
    from mlx_mobilemoe.checkpoint import load_model

    with tempfile.TemporaryDirectory() as d:
        for qat in (True, False):
            folder = Path(d) / f"tiny-{qat}"
            official.write_checkpoint(folder, official.TINY, qat=qat, seed=1)
            model = load_model(folder)
            name = "qat" if qat else "bf16"
            out[f"official-{name}.logits"] = _hash(model(_tokens(model.args.vocab_size)))


def _random_tiny(out):
    from mlx_mobilemoe import Model, preset
    from mlx_mobilemoe.model import quantize_model
    from mlx_mobilemoe.train.lora import apply_lora
    from mlx_mobilemoe.moe import MoEOptions

    mx.random.seed(0)
    model = Model(preset("tiny"))
    mx.eval(model.parameters())
    x = _tokens(model.args.vocab_size, 40)  # 80 assignments: the sorted gather path too
    for layer in model.layers:  # spread the selections a little
        layer.feed_forward.expert_bias = mx.random.normal(layer.feed_forward.expert_bias.shape)
    out["tiny.logits"] = _hash(model(x))
    out["tiny.logits.one_token"] = _hash(model(x[:1, :1]))
    for dispatch, cf in (("dropless", 1.25), ("drop", 1.0), ("drop", 0.5)):
        logits, st = model(x, moe=MoEOptions(dispatch, cf, stats=True))
        key = f"tiny.train.{dispatch}.{cf}"
        out[key] = _hash(logits)
        for k in sorted(st):
            out[f"{key}.{k}"] = _hash(st[k])
    model.set_experts_per_token(1)
    out["tiny.logits.k1"] = _hash(model(x))
    model.set_experts_per_token(None)
    q = quantize_model(model)
    out["tiny.int4.logits"] = _hash(q(x))
    mx.random.seed(1)
    lora = apply_lora(Model(preset("tiny")), rank=4, targets=("attention", "experts"))
    for layer in lora.layers:
        for n in ("gate_up", "down"):
            e = getattr(layer.feed_forward.experts, n)
            e.lora_b = mx.random.normal(e.lora_b.shape) * 0.1
    out["tiny.lora.logits"] = _hash(lora(x))
    logits, _ = lora(x, moe=MoEOptions("dropless", 1.0, stats=True))
    out["tiny.lora.train.dropless"] = _hash(logits)


def measure() -> dict:
    out: dict = {}
    with mx.stream(mx.cpu):
        _default_model(out)
        _official(out)
        _random_tiny(out)
    return out


def recorded() -> dict:
    return json.loads(RECORD.read_text()) if RECORD.exists() else {}


if __name__ == "__main__":  # adds (or replaces) this BLAS's record
    rec = recorded()
    rec[blas()] = measure()
    RECORD.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    print(RECORD, blas())
