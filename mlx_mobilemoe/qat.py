"""Quantization-aware training: a float Model in fake-quant form, and back.

`to_qat(model)` swaps every linear, routed-expert stack and the (tied) embedding for a
fake-quant twin whose float32 weight stays the trained parameter; the forward pass sees the
int4 g32 weights the export will store (quant.fake_quant_int4), gradients reach the float
weights through a straight-through estimator. The router, expert_bias and norms stay float.
`to_int4(qat_model)` builds the real int4 Model (same integers, same fp16 scales) and
`to_float(qat_model)` the plain float Model; both leave the QAT model untouched.

Scales: "learned" (default) makes per-group log-scales trainable (LSQ), initialised by the
per-group MSE search (`init="mse"`) or round-to-nearest; "dynamic" recomputes absmax / 7 from
the weights every step (what round-to-nearest export will choose).
Activations: `act_bits=8` adds per-token dynamic INT8 fake quantization on every linear and
expert input, the regime of an 8da4w runtime (ExecuTorch). The exported format stores no
activation scales: MLX inference runs float activations against the int4 weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from . import quant
from .model import SLOT_KINDS, Model, module_slots, quantize_model

SCALE_MODES = ("dynamic", "learned")
SCALE_INITS = ("rtn", "mse")


class FakeQuant(nn.Module):
    """Shared part: a float weight quantized along its last axis, optional learned scales."""

    def __init__(self, weight: mx.array, scales: str = "dynamic", init: str = "rtn",
                 act_bits: Optional[int] = None):
        super().__init__()
        if scales not in SCALE_MODES:
            raise ValueError(f"scales must be one of {SCALE_MODES}, got {scales!r}")
        if act_bits not in (None, 8):
            raise ValueError(f"act_bits must be None or 8, got {act_bits!r}")
        self.weight = weight.astype(mx.float32)
        if scales == "learned":
            s0 = (quant.mse_scales if init == "mse" else quant.symmetric_scales)(self.weight)
            self.log_scales = mx.log(s0.astype(mx.float32))
        self.act_bits = act_bits  # plain attribute, not a parameter

    def _scales(self):
        return mx.exp(self.log_scales) if "log_scales" in self else None

    def export_scales(self) -> mx.array:
        """The fp16 scales the file will hold (exactly those the forward pass uses)."""
        s = self._scales()
        if s is None:
            return quant.symmetric_scales(self.weight)
        return s.astype(mx.float16)

    def quantized_weight(self) -> mx.array:
        return quant.fake_quant_int4(self.weight, self._scales())

    def _act(self, x):
        return quant.fake_quant_int8_per_token(x) if self.act_bits else x


class FakeQuantLinear(FakeQuant):
    """[out, in] linear, grouped along in."""

    def __call__(self, x):
        return self._act(x) @ self.quantized_weight().astype(x.dtype).T


class FakeQuantExpertLinear(FakeQuant):
    """E stacked [in, out] experts, grouped along out (the official orientation)."""

    def __call__(self, x, indices, sorted_indices=False):
        w = self.quantized_weight().astype(x.dtype)
        return mx.gather_mm(self._act(x), w, rhs_indices=indices, sorted_indices=sorted_indices)

    def bmm(self, xe):  # xe (E, C, in): every expert at once (drop-and-pad training dispatch)
        return self._act(xe) @ self.quantized_weight().astype(xe.dtype)


class FakeQuantEmbedding(FakeQuant):
    """Tied [V, H] embedding, grouped along H: rows are quantized independently, so a
    lookup quantizes only the rows it reads."""

    def __call__(self, ids):
        w = self.weight[ids]
        s = self._scales()
        return quant.fake_quant_int4(w, None if s is None else s[ids])

    def as_linear(self, x):
        return self._act(x) @ self.quantized_weight().astype(x.dtype).T


def _targets(model: Model):
    """(path, parent, attribute, kind) of every module that is int4 in the export; the paths
    are those `quantize_model` passes to `scales_for`."""
    for path, parent, name, group in module_slots(model):
        yield path, parent, name, SLOT_KINDS[group]


_FAKE = {"linear": FakeQuantLinear, "experts": FakeQuantExpertLinear,
         "embedding": FakeQuantEmbedding}


def to_qat(model: Model, scales: str = "learned", init: str = "mse",
           act_bits: Optional[int] = None) -> Model:
    """Float Model -> fake-quant training form, in place (returns the model)."""
    if model.args.is_quantized:
        raise ValueError("QAT starts from a float model; this one is already int4")
    if init not in SCALE_INITS:
        raise ValueError(f"init must be one of {SCALE_INITS}, got {init!r}")
    for _, parent, name, kind in _targets(model):
        mod = getattr(parent, name)
        if isinstance(mod, FakeQuant):
            raise ValueError("model is already in QAT form")
        setattr(parent, name, _FAKE[kind](mod.weight, scales, init, act_bits))
    mx.eval(model.parameters())
    return model


def is_qat(model: Model) -> bool:
    return isinstance(model.model.embed_tokens, FakeQuant)


def fake_quant_modules(model: Model) -> dict:
    return {path: getattr(parent, name) for path, parent, name, _ in _targets(model)
            if isinstance(getattr(parent, name), FakeQuant)}


def set_act_bits(model: Model, bits: Optional[int]) -> None:
    for mod in fake_quant_modules(model).values():
        mod.act_bits = bits


def to_float(model: Model) -> Model:
    """A new float Model holding the QAT model's float weights (learned scales dropped)."""
    args = dataclasses.replace(model.args, quantization=None)
    out = Model(args)
    weights = [(k, v) for k, v in tree_flatten(model.parameters())
               if not k.endswith("log_scales")]
    out.load_weights(weights, strict=True)
    out.compute_dtype = model.compute_dtype
    mx.eval(out.parameters())
    return out


def to_int4(model: Model) -> Model:
    """A new int4 Model whose integers and fp16 scales are exactly what the fake-quant
    forward pass of `model` uses."""
    mods = fake_quant_modules(model)
    if not mods:
        raise ValueError("not a QAT model (call to_qat first)")
    scales = {p: m.export_scales() for p, m in mods.items()}
    return quantize_model(to_float(model), scales_for=lambda path, w: scales[path])


def dequantize_model(model: Model) -> Model:
    """A new float Model holding an int4 Model's weights dequantized exactly (q * s in
    float32). Same logits up to summation order, and much faster on CPU, where MLX's
    quantized matmuls run ~20x slower than float ones."""
    if not model.args.is_quantized:
        raise ValueError("not an int4 model")
    flat = dict(tree_flatten(model.parameters()))
    weights = []
    for k, v in flat.items():
        if k.endswith((".scales", ".biases")):
            continue
        if v.dtype == mx.uint32:
            base = k[: -len(".weight")]
            v = quant.dequantize_int4(quant.mlx_to_int4(v), flat[base + ".scales"])
        weights.append((k, v))
    out = Model(dataclasses.replace(model.args, quantization=None))
    out.load_weights(weights, strict=True)
    out.compute_dtype = model.compute_dtype
    mx.eval(out.parameters())
    return out


def round_to_storage(model: Model) -> None:
    """Round the float parameters the official file stores as BF16 (norm weights and
    expert_bias) to bfloat16 values, in place and kept float32, so the in-memory model
    equals what `checkpoint.save` writes. The router is stored float32 and not touched."""
    def rnd(path, p):
        if path.endswith(("norm.weight", "layernorm.weight", "expert_bias")):
            return p.astype(mx.bfloat16).astype(p.dtype)
        return p

    flat = [(k, rnd(k, v)) for k, v in tree_flatten(model.parameters())]
    model.load_weights(flat, strict=False)
    mx.eval(model.parameters())


def ptq(model: Model, method: str = "rtn") -> Model:
    """Post-training int4 of a float Model, in place: "rtn" (absmax / 7) or "mse"
    (per-group clip-ratio search, quant.mse_scales)."""
    if method == "rtn":
        return quantize_model(model)
    if method == "mse":
        return quantize_model(model, scales_for=lambda path, w: quant.mse_scales(w))
    raise ValueError(f"unknown PTQ method {method!r}; choose rtn or mse")


# --- QAT state on disk (MLX parameter names, float32; not the official layout) ----------

QAT_STATE = "qat.json"
QAT_WEIGHTS = "qat_weights.safetensors"


def qat_options(model: Model) -> dict:
    mods = list(fake_quant_modules(model).values())
    if not mods:
        raise ValueError("not a QAT model")
    return {"scales": "learned" if "log_scales" in mods[0] else "dynamic",
            "act_bits": mods[0].act_bits}


def save_qat(model: Model, tokenizer, path) -> Path:
    """Float32 master weights (+ learned log-scales) of a QAT model, with config.json,
    qat.json and the tokenizer: what `load_qat` and `python -m mlx_mobilemoe.export` read."""
    from .checkpoint import save_tokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    opts = qat_options(model)
    mx.save_safetensors(str(path / QAT_WEIGHTS), dict(tree_flatten(model.parameters())),
                        metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps(model.args.to_dict(), indent=2) + "\n")
    (path / QAT_STATE).write_text(json.dumps(opts, indent=2) + "\n")
    if tokenizer is not None:
        save_tokenizer(tokenizer, path)
    return path


def load_qat(path) -> Model:
    from .checkpoint import load_config

    path = Path(path)
    opts = json.loads((path / QAT_STATE).read_text())
    model = to_qat(Model(load_config(path)), opts["scales"], "rtn", opts.get("act_bits"))
    model.load_weights(str(path / QAT_WEIGHTS), strict=True)
    mx.eval(model.parameters())
    return model
