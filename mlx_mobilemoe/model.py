"""MobileMoE, top to bottom: attention, decoder block, model (the MoE block, with its router
and experts, is mlx_mobilemoe/moe.py), the module tree and int4 conversion.

Forward semantics follow DESIGN.md §4. Attribute paths match the checkpoint's tensor names
except where the official layout stores experts as bare tensors (`checkpoint.py` maps them).
The model plugs into mlx-lm: `layers`, `make_cache()` and `__call__(inputs, cache=...)`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_attention_mask, scaled_dot_product_attention
from mlx_lm.models.cache import KVCache

from . import quant
from .config import QAT_QUANTIZATION, ModelArgs
from . import decode_step
from .kernels import gpu_backend
from .kernels._build import eager
from .moe import INFERENCE, MoE, MoEOptions, Q, QuantizedExpertLinear, linear


# --- rotary embedding -------------------------------------------------------------------

def rope_inv_freq(head_dim: int, theta: float, rope_scaling: Optional[dict]) -> mx.array:
    """Inverse frequencies with llama3 scaling, computed with `where` (no division by zero
    when low_freq_factor == high_freq_factor)."""
    inv = 1.0 / (theta ** (mx.arange(0, head_dim, 2, dtype=mx.float32) / head_dim))
    if not rope_scaling or rope_scaling.get("rope_type", rope_scaling.get("type")) != "llama3":
        return inv
    factor = rope_scaling["factor"]
    orig = rope_scaling["original_max_position_embeddings"]
    low, high = rope_scaling["low_freq_factor"], rope_scaling["high_freq_factor"]
    wavelen = 2 * math.pi / inv
    low_wavelen, high_wavelen = orig / low, orig / high
    scaled = mx.where(wavelen > low_wavelen, inv / factor, inv)
    if high != low:  # smooth band between the two wavelengths
        smooth = (orig / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv / factor + smooth * inv
        band = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        scaled = mx.where(band, blended, scaled)
    return scaled


# --- layers -----------------------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, args: ModelArgs, layer_idx: int):
        super().__init__()
        H, hd = args.hidden_size, args.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = (
            args.num_attention_heads, args.num_key_value_heads, hd)
        self.scale = hd ** -0.5
        q = args.is_quantized
        self.q_proj = linear(H, self.n_heads * hd, q)
        self.k_proj = linear(H, self.n_kv_heads * hd, q)
        self.v_proj = linear(H, self.n_kv_heads * hd, q)
        self.o_proj = linear(self.n_heads * hd, H, q)
        self.use_rope = args.uses_rope(layer_idx)
        # Llama 4 convention: the weightless qk-norm is applied on RoPE layers only.
        self.use_qk_norm = args.use_qk_norm and self.use_rope
        self.eps = args.rms_norm_eps
        self._freqs = 1.0 / rope_inv_freq(hd, args.rope_theta, args.rope_scaling)

    def rope(self, x, offset):
        # traditional=True rotates adjacent pairs (x[2i], x[2i+1]), as the checkpoint expects.
        return mx.fast.rope(x, self.head_dim, traditional=True, base=None, scale=1.0,
                            offset=offset, freqs=self._freqs)

    def __call__(self, x, mask=None, cache=None):
        B, T, _ = x.shape
        q = self.q_proj(x).reshape(B, T, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        if self.use_rope:
            offset = cache.offset if cache is not None else 0
            q, k = self.rope(q, offset), self.rope(k, offset)
        if self.use_qk_norm:
            q = mx.fast.rms_norm(q, None, self.eps)
            k = mx.fast.rms_norm(k, None, self.eps)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        o = scaled_dot_product_attention(q, k, v, cache=cache, scale=self.scale, mask=mask)
        return self.o_proj(o.transpose(0, 2, 1, 3).reshape(B, T, -1))


class DecoderLayer(nn.Module):
    def __init__(self, args: ModelArgs, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(args, layer_idx)
        self.feed_forward = MoE.from_args(args)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x, mask=None, cache=None, moe: MoEOptions = INFERENCE):
        """-> h, or (h, MoE statistics) when moe.stats."""
        h = x + self.self_attn(self.input_layernorm(x), mask, cache)
        y = self.feed_forward(self.post_attention_layernorm(h), moe)
        if moe.stats:
            return h + y[0], y[1]
        return h + y


class MobileMoEModel(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        if args.is_quantized:
            self.embed_tokens = nn.QuantizedEmbedding(args.vocab_size, args.hidden_size, **Q)
        else:
            self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [DecoderLayer(args, i) for i in range(args.num_hidden_layers)]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def embed(self, inputs, dtype):
        e = self.embed_tokens
        if isinstance(e, nn.QuantizedEmbedding):
            # Dequantize the gathered rows with scales in `dtype`: an fp16 product q * s
            # would round (|q| * s needs up to 14 significant bits).
            return mx.dequantize(e.weight[inputs], e.scales[inputs].astype(dtype),
                                 e.biases[inputs].astype(dtype), **Q)
        return e(inputs)

    def __call__(self, inputs, cache=None, input_embeddings=None, dtype=mx.float32,
                 moe: MoEOptions = INFERENCE):
        h = input_embeddings if input_embeddings is not None else self.embed(inputs, dtype)
        h = h.astype(dtype)
        if cache is None:
            cache = [None] * len(self.layers)
        mask = create_attention_mask(h, cache[0])
        stats = []
        for layer, c in zip(self.layers, cache):
            h = layer(h, mask, c, moe)
            if moe.stats:
                h, st = h
                stats.append(st)
        h = self.norm(h)
        if moe.stats:
            return h, {k: mx.stack([s[k] for s in stats]) for k in stats[0]}
        return h


class Model(nn.Module):
    """Causal LM with tied head. `model(tokens)` (B, T) -> logits (B, T, V).

    `moe=MoEOptions(...)` picks the MoE dispatch (training: "drop"/"dropless") and, with
    stats=True, returns (logits, {load (L, E), dropped (L,), z (L,), aux (L,)})."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.model = MobileMoEModel(args)
        self.compute_dtype = mx.float32

    def __call__(self, inputs, cache=None, input_embeddings=None,
                 moe: MoEOptions = INFERENCE):
        if moe is INFERENCE and decode_step.applies(inputs, cache, input_embeddings):
            return decode_step.decode_step(self, inputs, cache)  # forward(), compiled
        return self.forward(inputs, cache, input_embeddings, moe)

    def forward(self, inputs, cache=None, input_embeddings=None,
                moe: MoEOptions = INFERENCE):
        out = self.model(inputs, cache, input_embeddings, dtype=self.compute_dtype, moe=moe)
        if moe.stats:
            return self.model.embed_tokens.as_linear(out[0]), out[1]
        return self.model.embed_tokens.as_linear(out)

    def structure_key(self) -> tuple:
        """What a traced decode step bakes in besides the arrays (decode_step.py)."""
        return (self.compute_dtype, gpu_backend(), eager(),
                tuple(l.feed_forward.num_experts_per_tok for l in self.layers))

    @property
    def layers(self):
        return self.model.layers

    def make_cache(self):
        return [KVCache() for _ in self.layers]

    def set_experts_per_token(self, k) -> None:
        """Inference-time override of top-k (adaptive compute): an int for every layer or a
        list with one per layer; None restores the config."""
        ks = k if isinstance(k, (list, tuple)) else [k] * len(self.layers)
        if len(ks) != len(self.layers):
            raise ValueError(f"experts per token: {len(ks)} values for {len(self.layers)} layers")
        ks = [self.args.num_experts_per_tok if v is None else v for v in ks]
        for v in ks:
            if not 1 <= v <= self.args.num_local_experts:
                raise ValueError(f"experts per token must be in 1..{self.args.num_local_experts}"
                                 f", got {v}")
        for layer, v in zip(self.layers, ks):
            layer.feed_forward.num_experts_per_tok = v

    def set_dtype(self, dtype) -> None:
        """Activations (and float weights other than the float32 router) in `dtype`."""
        self.compute_dtype = dtype

        def cast(path, p):
            if _keeps_float32(path):
                return p.astype(mx.float32)
            if p.dtype in (mx.float32, mx.float16, mx.bfloat16) and \
                    not path.endswith(("scales", "biases")):
                return p.astype(dtype)
            return p

        self.update(_map_with_path(cast, self.parameters()))


def _keeps_float32(path: str) -> bool:
    return path.endswith(("router.weight", "expert_bias"))


def _map_with_path(fn, tree, prefix=""):
    if isinstance(tree, dict):
        return {k: _map_with_path(fn, v, f"{prefix}{k}.") for k, v in tree.items()}
    if isinstance(tree, list):
        return [_map_with_path(fn, v, f"{prefix}{i}.") for i, v in enumerate(tree)]
    return fn(prefix[:-1], tree)


# --- the module tree, once ---------------------------------------------------------------

# Weight groups of the model, and the kind of module each holds.
SLOT_KINDS = {"embedding": "embedding", "attention": "linear", "shared_expert": "linear",
              "experts": "experts"}


def module_slots(model: Model):
    """(parameter path, parent module, attribute, group) of every weight module the int4
    format quantizes: the embedding, then per layer the attention linears, the routed expert
    stacks and the shared expert's linears (the order LoRA draws its initial adapters in).
    Router and norms stay float."""
    m = model.model
    yield "model.embed_tokens", m, "embed_tokens", "embedding"
    for i, layer in enumerate(m.layers):
        pre = f"model.layers.{i}"
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield f"{pre}.self_attn.{n}", layer.self_attn, n, "attention"
        ff = layer.feed_forward
        for n in ("gate_up", "down"):
            yield f"{pre}.feed_forward.experts.{n}", ff.experts, n, "experts"
        if ff.shared_expert is not None:
            for n in ("gate_proj", "up_proj", "down_proj"):
                yield f"{pre}.feed_forward.shared_expert.{n}", ff.shared_expert, n, "shared_expert"


def copy_model(model: Model) -> Model:
    """A new Model with its own args and module tree holding the same arrays (MLX arrays are
    values: converting the copy, e.g. quantize_model, leaves the original as it was)."""
    out = Model(dataclasses.replace(model.args))
    out.update(model.parameters())
    out.compute_dtype = model.compute_dtype
    return out


# --- float -> int4 (round to nearest) ---------------------------------------------------

def quantize_model(model: Model, scales_for=None) -> Model:
    """Round-to-nearest symmetric int4 g32 of every linear, expert and the embedding, in place.

    The router and norms stay float. `scales_for(path, weight) -> fp16 scales or None` lets
    a PTQ method choose scales (None = absmax / 7)."""
    if model.args.is_quantized:
        return model
    for path, parent, name, group in list(module_slots(model)):
        w = getattr(parent, name).weight
        kind = SLOT_KINDS[group]
        if kind == "embedding":
            q = nn.QuantizedEmbedding(*w.shape, **Q)
        elif kind == "linear":
            q = nn.QuantizedLinear(w.shape[1], w.shape[0], bias=False, **Q)
        else:
            q = QuantizedExpertLinear(*w.shape)
        s = scales_for(path, w) if scales_for else None
        q.weight, q.scales, q.biases = quant.int4_to_mlx(*quant.quantize_int4(w, s))
        setattr(parent, name, q)
    model.args.quantization = dict(QAT_QUANTIZATION)
    mx.eval(model.parameters())
    return model
