"""MobileMoE, top to bottom: attention, router, experts, decoder block, model.

Forward semantics follow DESIGN.md §4. Attribute paths match the checkpoint's tensor names
except where the official layout stores experts as bare tensors (`checkpoint.py` maps them).
The model plugs into mlx-lm: `layers`, `make_cache()` and `__call__(inputs, cache=...)`.
"""

from __future__ import annotations

import math
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_attention_mask, scaled_dot_product_attention
from mlx_lm.models.cache import KVCache

from . import quant
from .config import QAT_QUANTIZATION, ModelArgs
from .kernels import fused_moe

Q = dict(group_size=quant.GROUP_SIZE, bits=quant.BITS)


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

def linear(in_dims: int, out_dims: int, quantized: bool) -> nn.Module:
    if quantized:
        return nn.QuantizedLinear(in_dims, out_dims, bias=False, **Q)
    return nn.Linear(in_dims, out_dims, bias=False)


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


class MLP(nn.Module):
    """SwiGLU feed-forward: the shared expert."""

    def __init__(self, dims: int, hidden: int, quantized: bool):
        super().__init__()
        self.gate_proj = linear(dims, hidden, quantized)
        self.up_proj = linear(dims, hidden, quantized)
        self.down_proj = linear(hidden, dims, quantized)

    def __call__(self, x):
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class ExpertLinear(nn.Module):
    """E stacked linears stored [E, in, out]; row i of x goes through expert indices[i]."""

    def __init__(self, num_experts: int, in_dims: int, out_dims: int):
        super().__init__()
        s = in_dims ** -0.5
        self.weight = mx.random.uniform(-s, s, (num_experts, in_dims, out_dims))

    def __call__(self, x, indices, sorted_indices=False):
        return mx.gather_mm(x, self.weight, rhs_indices=indices, sorted_indices=sorted_indices)


class QuantizedExpertLinear(nn.Module):
    """int4 g32 experts in MLX affine layout, grouped along `out` (official orientation)."""

    def __init__(self, num_experts: int, in_dims: int, out_dims: int):
        super().__init__()
        self.weight = mx.zeros((num_experts, in_dims, out_dims // 8), dtype=mx.uint32)
        self.scales = mx.ones((num_experts, in_dims, out_dims // quant.GROUP_SIZE), mx.float16)
        self.biases = -8 * self.scales
        self.freeze()

    def __call__(self, x, indices, sorted_indices=False):
        return mx.gather_qmm(x, self.weight, self.scales, self.biases, rhs_indices=indices,
                             transpose=False, sorted_indices=sorted_indices, **Q)


class Experts(nn.Module):
    """The routed experts: gate_up [E, H, 2I] (gate columns first), down [E, I, H]."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        E, H, I = args.num_local_experts, args.hidden_size, args.intermediate_size
        cls = QuantizedExpertLinear if args.is_quantized else ExpertLinear
        self.gate_up = cls(E, H, 2 * I)
        self.down = cls(E, I, H)

    def __call__(self, x, indices):
        # x (N, H), indices (N, k) -> (N, k, H)
        N, k = indices.shape
        x = x[:, None, None, :]  # (N, 1, 1, H): one row per token, broadcast over its k experts
        do_sort = indices.size >= 64
        if do_sort:  # group rows by expert so each expert's weights are read once
            flat = indices.flatten()
            order = mx.argsort(flat)
            inv = mx.argsort(order)
            x = x.reshape(N, 1, -1)[order // k]  # (N*k, 1, H)
            idx = flat[order]
        else:
            idx = indices
        gu = self.gate_up(x, idx, sorted_indices=do_sort)
        g, u = mx.split(gu, 2, axis=-1)
        y = self.down(nn.silu(g) * u, idx, sorted_indices=do_sort)
        if do_sort:
            return y.squeeze(-2)[inv].reshape(N, k, -1)
        return y.squeeze(-2)


class MoE(nn.Module):
    """Sigmoid-routed top-k experts plus an always-on shared expert."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        E = args.num_local_experts
        self.num_experts_per_tok = args.num_experts_per_tok
        self.routed_scaling_factor = args.routed_scaling_factor
        self.norm_topk_prob = args.norm_topk_prob
        self.router = nn.Linear(args.hidden_size, E, bias=False)
        self.router.weight = self.router.weight.astype(mx.float32)
        self.expert_bias = mx.zeros((E,), dtype=mx.float32)  # selects experts, never weights them
        self.experts = Experts(args)
        self.shared_expert = (
            MLP(args.hidden_size, args.intermediate_size_mlp, args.is_quantized)
            if args.intermediate_size_mlp else None)

    def route(self, x):
        """x (..., H) -> expert indices (..., k) uint32 and float32 combine weights (..., k)."""
        scores = mx.sigmoid(self.router(x.astype(mx.float32)))
        k = self.num_experts_per_tok
        biased = scores + self.expert_bias
        idx = mx.argpartition(-biased, kth=k - 1, axis=-1)[..., :k]
        idx = mx.stop_gradient(idx.astype(mx.uint32))
        w = mx.take_along_axis(scores, idx, axis=-1)
        if self.norm_topk_prob:
            w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
        return idx, w * self.routed_scaling_factor

    def __call__(self, x):
        y = fused_moe(self, x)  # fused INT4 kernels on a Metal/CUDA GPU, else None
        if y is not None:
            return y
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        idx, w = self.route(x2)
        y = self.experts(x2, idx)  # (N, k, H)
        out = (y * w[..., None]).sum(axis=-2).astype(x.dtype)
        if self.shared_expert is not None:
            out = out + self.shared_expert(x2)
        return out.reshape(shape)


class DecoderLayer(nn.Module):
    def __init__(self, args: ModelArgs, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(args, layer_idx)
        self.feed_forward = MoE(args)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x, mask=None, cache=None):
        h = x + self.self_attn(self.input_layernorm(x), mask, cache)
        return h + self.feed_forward(self.post_attention_layernorm(h))


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

    def __call__(self, inputs, cache=None, input_embeddings=None, dtype=mx.float32):
        h = input_embeddings if input_embeddings is not None else self.embed(inputs, dtype)
        h = h.astype(dtype)
        if cache is None:
            cache = [None] * len(self.layers)
        mask = create_attention_mask(h, cache[0])
        for layer, c in zip(self.layers, cache):
            h = layer(h, mask, c)
        return self.norm(h)


class Model(nn.Module):
    """Causal LM with tied head. `model(tokens)` (B, T) -> logits (B, T, V)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.model = MobileMoEModel(args)
        self.compute_dtype = mx.float32

    def __call__(self, inputs, cache=None, input_embeddings=None):
        h = self.model(inputs, cache, input_embeddings, dtype=self.compute_dtype)
        return self.model.embed_tokens.as_linear(h)

    @property
    def layers(self):
        return self.model.layers

    def make_cache(self):
        return [KVCache() for _ in self.layers]

    def set_experts_per_token(self, k: int) -> None:
        """Inference-time override of top-k (adaptive compute); k = None restores the config."""
        k = self.args.num_experts_per_tok if k is None else k
        if not 1 <= k <= self.args.num_local_experts:
            raise ValueError(f"experts per token must be in 1..{self.args.num_local_experts}, "
                             f"got {k}")
        for layer in self.layers:
            layer.feed_forward.num_experts_per_tok = k

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


# --- float -> int4 (round to nearest) ---------------------------------------------------

def quantize_model(model: Model, scales_for=None) -> Model:
    """Round-to-nearest symmetric int4 g32 of every linear, expert and the embedding, in place.

    The router and norms stay float. `scales_for(path, weight) -> fp16 scales or None` lets
    a PTQ method choose scales (None = absmax / 7)."""
    if model.args.is_quantized:
        return model

    def q(path, w):
        s = scales_for(path, w) if scales_for else None
        return quant.int4_to_mlx(*quant.quantize_int4(w, s))

    m = model.model
    qe = nn.QuantizedEmbedding(*m.embed_tokens.weight.shape, **Q)
    qe.weight, qe.scales, qe.biases = q("model.embed_tokens", m.embed_tokens.weight)
    m.embed_tokens = qe
    for i, layer in enumerate(m.layers):
        pre = f"model.layers.{i}"
        groups = [(layer.self_attn, ["q_proj", "k_proj", "v_proj", "o_proj"], "self_attn")]
        ff = layer.feed_forward
        if ff.shared_expert is not None:
            groups.append((ff.shared_expert, ["gate_proj", "up_proj", "down_proj"],
                           "feed_forward.shared_expert"))
        for mod, names, sub in groups:
            for n in names:
                lin = getattr(mod, n)
                out_dims, in_dims = lin.weight.shape
                ql = nn.QuantizedLinear(in_dims, out_dims, bias=False, **Q)
                ql.weight, ql.scales, ql.biases = q(f"{pre}.{sub}.{n}", lin.weight)
                setattr(mod, n, ql)
        for n in ("gate_up", "down"):
            el = getattr(ff.experts, n)
            qel = QuantizedExpertLinear(*el.weight.shape)
            qel.weight, qel.scales, qel.biases = q(f"{pre}.feed_forward.experts.{n}", el.weight)
            setattr(ff.experts, n, qel)
    model.args.quantization = dict(QAT_QUANTIZATION)
    mx.eval(model.parameters())
    return model
