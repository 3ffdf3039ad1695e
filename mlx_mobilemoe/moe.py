"""The MoE block, its one home: route -> dispatch -> combine, optional router statistics.

    y = sum_r w_r * down_{e_r}(silu(gate_{e_r}(x)) * up_{e_r}(x)) + shared(x)   (DESIGN.md §4)

Dispatch (`MoEOptions.dispatch`):
- "auto" (inference default): the fused INT4 kernels when `MoE.plan` says they apply (a
  Metal/CUDA GPU, symmetric int4 experts) and the call has at most
  kernels.moe.PLAIN_ABOVE_ROWS_PER_EXPERT routed rows per expert (T * k / E; above it MLX's
  own gather_qmm measured faster), else "dropless";
- "dropless": every token reaches its k experts through MLX's gather matmuls (the
  reference the kernels are tested against, and the gradient of the fused path);
- "fused": the kernels, or a KernelError saying why they cannot run;
- "drop": drop-and-pad (training). Each expert takes at most C = ceil(capacity_factor * N *
  k / E) tokens (earlier tokens first); the rest of its assignments are dropped (combine
  weight 0; the shared expert and the residual still carry them), empty slots are padding,
  and the experts run as one batched matmul over [E, C, H].
Statistics per block (`MoEOptions.stats`): selection counts (the load, before any drop),
dropped assignments, router z-loss (mean logsumexp(logits)^2) and the Switch auxiliary loss
E * sum(f_i * P_i).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import mlx.core as mx
import mlx.nn as nn

from . import quant
from .kernels import moe as K

Q = dict(group_size=quant.GROUP_SIZE, bits=quant.BITS)
DISPATCHES = ("auto", "dropless", "fused", "drop")


@dataclass(frozen=True)
class MoEOptions:
    """How the MoE blocks of a forward pass dispatch, and whether they report statistics
    (then every level returns (output, stats))."""

    dispatch: str = "auto"
    capacity_factor: float = 1.25  # "drop" only
    stats: bool = False

    def __post_init__(self):
        if self.dispatch not in DISPATCHES:
            raise ValueError(f"MoE dispatch must be one of {DISPATCHES}, got {self.dispatch!r}")
        if not self.capacity_factor > 0:
            raise ValueError(f"capacity_factor must be > 0, got {self.capacity_factor}")


INFERENCE = MoEOptions()


def route(logits, expert_bias, k: int, scaling: float, norm: bool, top_p=None, token_k=None):
    """Router logits (N, E) float32 -> expert indices (N, k) uint32 and float32 combine
    weights (N, k): top-k of sigmoid(logits) + bias; the bias selects, never weights.
    Adaptive compute (mlx_mobilemoe/adaptive.py): top_p and/or token_k (N,) give weight 0 to
    some of the k selected experts (`adaptive_keep`) before the renormalisation."""
    scores = mx.sigmoid(logits)
    idx = mx.argpartition(-(scores + expert_bias), kth=k - 1, axis=-1)[..., :k]
    idx = mx.stop_gradient(idx.astype(mx.uint32))
    w = mx.take_along_axis(scores, idx, axis=-1)
    if top_p is not None or token_k is not None:
        w = w * adaptive_keep(w, top_p, token_k)
    if norm:
        w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
    return idx, w * scaling


def adaptive_keep(w, top_p=None, token_k=None):
    """Mask (N, k) over the selected experts' scores w (N, k): an expert is kept when the
    renormalised weight of the experts scoring above it is still below top_p (the smallest
    set reaching top_p; the best expert always stays) and its rank is below token_k (N,)."""
    k = w.shape[-1]
    order = mx.argsort(-w, axis=-1)
    rank = mx.argsort(order, axis=-1)  # 0 = highest score
    keep = mx.ones(w.shape, dtype=mx.bool_)
    if top_p is not None:
        ws = mx.take_along_axis(w, order, axis=-1)
        ws = ws / (ws.sum(axis=-1, keepdims=True) + 1e-20)
        before = mx.cumsum(ws, axis=-1) - ws  # mass of the experts ranked above
        keep = mx.take_along_axis(before < top_p, rank, axis=-1)
    if token_k is not None:
        tk = mx.array(token_k).reshape(-1, 1) if not isinstance(token_k, int) else token_k
        keep = keep & (rank < mx.minimum(tk, k))
    return mx.stop_gradient(keep.astype(w.dtype))


def router_stats(logits, idx, keep) -> dict:
    """load (E,) selections, dropped assignments, z-loss and Switch aux loss of one block."""
    E = logits.shape[-1]
    counts = (idx.reshape(-1)[:, None] == mx.arange(E, dtype=idx.dtype)).sum(0)
    counts = mx.stop_gradient(counts.astype(mx.float32))
    z = (mx.logsumexp(logits, axis=-1) ** 2).mean()
    s = mx.sigmoid(logits)
    p = (s / s.sum(-1, keepdims=True)).mean(0)  # mean routing probability per expert
    aux = E * ((counts / counts.sum()) * p).sum()
    dropped = mx.stop_gradient(keep.size - keep.sum()) if keep is not None else mx.array(0.0)
    return {"load": counts, "dropped": dropped, "z": z, "aux": aux}


# --- experts ------------------------------------------------------------------------------

class ExpertLinear(nn.Module):
    """E stacked linears stored [E, in, out]; row i of x goes through expert indices[i]."""

    def __init__(self, num_experts: int, in_dims: int, out_dims: int):
        super().__init__()
        s = in_dims ** -0.5
        self.weight = mx.random.uniform(-s, s, (num_experts, in_dims, out_dims))

    def __call__(self, x, indices, sorted_indices=False):
        return mx.gather_mm(x, self.weight, rhs_indices=indices, sorted_indices=sorted_indices)

    def bmm(self, xe):  # xe (E, C, in): every expert at once (drop-and-pad)
        return xe @ self.weight


class QuantizedExpertLinear(nn.Module):
    """Symmetric int4 g32 experts in MLX's affine layout (biases = -8 * scales, the only
    int4 format a config may name), grouped along `out` (official orientation). Records its
    bits, group size and mode as nn.QuantizedLinear does."""

    def __init__(self, num_experts: int, in_dims: int, out_dims: int):
        super().__init__()
        self.group_size, self.bits, self.mode = quant.GROUP_SIZE, quant.BITS, "affine"
        self.weight = mx.zeros((num_experts, in_dims, out_dims // 8), dtype=mx.uint32)
        self.scales = mx.ones((num_experts, in_dims, out_dims // quant.GROUP_SIZE), mx.float16)
        self.biases = -8 * self.scales
        self.freeze()

    def __call__(self, x, indices, sorted_indices=False):
        return mx.gather_qmm(x, self.weight, self.scales, self.biases, rhs_indices=indices,
                             transpose=False, sorted_indices=sorted_indices, **Q)

    def bmm(self, xe):
        E, C, d = xe.shape
        idx = mx.repeat(mx.arange(E, dtype=mx.uint32), C)
        return self(xe.reshape(E * C, 1, d), idx, sorted_indices=True).reshape(E, C, -1)


def _qweight(lin) -> Union[K.QWeight, str]:
    """The kernels' view of an int4 linear, or why it has none."""
    if not isinstance(lin, (QuantizedExpertLinear, nn.QuantizedLinear)):
        return f"{type(lin).__name__} weights: the kernels need int4"
    return K.QWeight(lin["weight"], lin["scales"], lin["biases"], lin.bits, lin.group_size,
                     lin.mode)


class MLP(nn.Module):
    """SwiGLU feed-forward: the shared expert."""

    def __init__(self, dims: int, hidden: int, quantized: bool):
        super().__init__()
        self.gate_proj = linear(dims, hidden, quantized)
        self.up_proj = linear(dims, hidden, quantized)
        self.down_proj = linear(hidden, dims, quantized)

    def __call__(self, x):
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


def linear(in_dims: int, out_dims: int, quantized: bool) -> nn.Module:
    if quantized:
        return nn.QuantizedLinear(in_dims, out_dims, bias=False, **Q)
    return nn.Linear(in_dims, out_dims, bias=False)


class Experts(nn.Module):
    """The routed experts: gate_up [E, H, 2I] (gate columns first), down [E, I, H]."""

    def __init__(self, num_experts: int, hidden: int, intermediate: int, quantized: bool):
        super().__init__()
        cls = QuantizedExpertLinear if quantized else ExpertLinear
        self.num_experts = num_experts
        self.gate_up = cls(num_experts, hidden, 2 * intermediate)
        self.down = cls(num_experts, intermediate, hidden)

    def __call__(self, x, indices):
        """Dropless: x (N, H), indices (N, k) -> (N, k, H)."""
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

    def drop_and_pad(self, x, idx, capacity_factor: float):
        """x (N, H), idx (N, k) -> expert outputs (N, k, H) and keep mask (N, k) float32."""
        N, k = idx.shape
        E = self.num_experts
        C = max(1, math.ceil(capacity_factor * N * k / E))
        flat = idx.reshape(-1)  # (N*k,), token-major: earlier tokens claim slots first
        onehot = (flat[:, None] == mx.arange(E, dtype=flat.dtype)).astype(mx.int32)  # (Nk, E)
        pos = ((mx.cumsum(onehot, axis=0) * onehot).sum(-1) - 1)  # rank of the assignment
        keep = pos < C
        slot = mx.where(keep, flat.astype(mx.int32) * C + pos, E * C)  # E*C: the drop bin
        token = mx.arange(N * k, dtype=mx.int32) // k
        src = mx.zeros((E * C + 1,), mx.int32).at[slot].add(mx.where(keep, token, 0))
        src = mx.stop_gradient(src[: E * C])  # empty slots read token 0: padding, never gathered
        xe = x[src].reshape(E, C, -1)  # (E, C, H)
        g, u = mx.split(self.gate_up.bmm(xe), 2, axis=-1)
        y = self.down.bmm(nn.silu(g) * u).reshape(E * C, -1)  # (E*C, H)
        y = mx.concatenate([y, mx.zeros((1, y.shape[-1]), y.dtype)])
        return y[mx.stop_gradient(slot)].reshape(N, k, -1), keep.reshape(N, k).astype(mx.float32)


# --- the block ------------------------------------------------------------------------------

class _KernelMemo:
    """The kernels' view of a block's arrays and the functions built over it; valid while
    the block holds the same arrays and routing scalars (it keeps them alive, so their ids
    cannot be reused)."""

    def __init__(self, key, weights):
        self.key, self.weights, self.plans, self.fns = key, weights, {}, {}


class MoE(nn.Module):
    """Sigmoid-routed top-k experts plus an always-on shared expert (shared = 0: none)."""

    def __init__(self, hidden: int, intermediate: int, shared: int, num_experts: int, k: int,
                 quantized: bool, routed_scaling_factor: float = 1.0,
                 norm_topk_prob: bool = True):
        super().__init__()
        self.num_experts_per_tok = k
        self.routed_scaling_factor = routed_scaling_factor
        self.norm_topk_prob = norm_topk_prob
        self.router = nn.Linear(hidden, num_experts, bias=False)
        self.router.weight = self.router.weight.astype(mx.float32)
        self.expert_bias = mx.zeros((num_experts,), dtype=mx.float32)  # selects, never weights
        self.experts = Experts(num_experts, hidden, intermediate, quantized)
        self.shared_expert = MLP(hidden, shared, quantized) if shared else None
        self._memo = None
        # Adaptive compute: per-token masks on the k selected experts (`adaptive_keep`).
        # The kernels take one k per call, so a block with either set runs unfused.
        self.top_p = None
        self.token_k = None

    @classmethod
    def from_args(cls, args) -> "MoE":
        return cls(args.hidden_size, args.intermediate_size, args.intermediate_size_mlp,
                   args.num_local_experts, args.num_experts_per_tok, args.is_quantized,
                   args.routed_scaling_factor, args.norm_topk_prob)

    @classmethod
    def from_weights(cls, w: K.MoEWeights, k: int) -> "MoE":
        """An int4 block holding the arrays of a kernel weights view (tests, benchmarks)."""
        H, I, S, E = w.dims
        moe = cls(H, I, S, E, k, True, w.routed_scaling_factor, w.norm_topk_prob)
        moe.router.weight, moe.expert_bias = w.router, w.expert_bias
        for lin, q in zip(moe._kernel_linears(), w.qweights()):
            lin.weight, lin.scales, lin.biases = q.weight, q.scales, q.mlx_biases()
        return moe

    def route(self, x):
        """x (..., H) -> expert indices (..., k) uint32 and float32 combine weights (..., k)."""
        return route(self.router(x.astype(mx.float32)), self.expert_bias,
                     self.num_experts_per_tok, self.routed_scaling_factor, self.norm_topk_prob,
                     self.top_p, self.token_k)

    def _kernel_linears(self) -> list:
        """The linears the kernels' view is made of, in MoEWeights order. Read through the
        modules' dicts: called per forward (nn.Module attribute lookup costs ~1 µs each)."""
        get = dict.get
        e, sh = get(self, "experts"), get(self, "shared_expert")
        lins = [get(e, "gate_up"), get(e, "down")]
        if sh is not None:
            lins += [get(sh, "gate_proj"), get(sh, "up_proj"), get(sh, "down_proj")]
        return lins

    def kernel_weights(self) -> Union[K.MoEWeights, str]:
        """The kernels' view of this block's arrays, or why there is none."""
        qs = [_qweight(lin) for lin in self._kernel_linears()]
        why = [q for q in qs if isinstance(q, str)]
        if why:
            return why[0]
        return K.MoEWeights(self.router["weight"], self["expert_bias"], *qs,
                            *[None] * (5 - len(qs)), self.routed_scaling_factor,
                            self.norm_topk_prob)

    def _weights_key(self) -> tuple:
        """What the kernels' view is made of: the identity of each array (the memo keeps
        them alive, so ids are not reused while it holds), each linear's type and
        quantization settings, and the routing scalars. Cheap: called per forward."""
        get = dict.get
        key = [id(get(get(self, "router"), "weight")), id(get(self, "expert_bias")),
               self.routed_scaling_factor, self.norm_topk_prob]
        for lin in self._kernel_linears():
            key += [type(lin), id(get(lin, "weight")), id(get(lin, "scales")),
                    id(get(lin, "biases")), getattr(lin, "bits", None),
                    getattr(lin, "group_size", None), getattr(lin, "mode", None)]
        return tuple(key)

    def _kernels(self) -> _KernelMemo:
        key = self._weights_key()
        if self._memo is None or self._memo.key != key:
            self._memo = _KernelMemo(key, self.kernel_weights())
        return self._memo

    def _plain_is_faster(self, tokens: int) -> bool:
        """Enough routed rows per expert that MLX's gather_qmm beats the fused kernels."""
        E = dict.get(self, "experts").num_experts
        return K.rows_per_expert(tokens, self.num_experts_per_tok, E) > \
            K.PLAIN_ABOVE_ROWS_PER_EXPERT

    def plan(self, dtype, tokens: Optional[int] = None) -> K.Plan:
        """Which path an "auto" forward of activations in `dtype` (over `tokens` tokens, if
        given) takes, and why."""
        if tokens is not None:
            p = self.plan(dtype)
            if p.fused and self._plain_is_faster(tokens):
                return K.Plan(None, f"plain MLX (more than {K.PLAIN_ABOVE_ROWS_PER_EXPERT} "
                                    "routed rows per expert: MLX's gather_qmm is faster there, "
                                    "measured)")
            return p
        if self.top_p is not None or self.token_k is not None:
            return K.Plan(None, "plain MLX (per-token expert masks: the kernels take one k "
                                "per call)")
        backend = K.gpu_backend()
        if backend is None:  # no need to look at the weights
            return K.plan(None, self.num_experts_per_tok, dtype, None)
        memo = self._kernels()
        key = (self.num_experts_per_tok, dtype, backend)
        if key not in memo.plans:
            memo.plans[key] = K.plan(memo.weights, self.num_experts_per_tok, dtype, backend)
        return memo.plans[key]

    def _fused(self, x, plan: K.Plan):
        if not plan.fused:
            raise K.KernelError(f"the fused MoE kernels cannot run this block: {plan.why}")
        memo, k = self._memo, self.num_experts_per_tok
        fn = memo.fns.get((k, plan.backend))
        if fn is None:
            fn = memo.fns[(k, plan.backend)] = K.differentiable(
                memo.weights, k, plan.backend, lambda v: self._unfused(v, INFERENCE)[0])
        return fn(x)

    def _unfused(self, x, opts: MoEOptions):
        """Route -> dropless or drop-and-pad experts -> combine (+ shared): (out, stats)."""
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        logits = self.router(x2.astype(mx.float32))  # (N, E)
        idx, w = route(logits, self.expert_bias, self.num_experts_per_tok,
                       self.routed_scaling_factor, self.norm_topk_prob, self.top_p, self.token_k)
        keep = None
        if opts.dispatch == "drop":
            y, keep = self.experts.drop_and_pad(x2, idx, opts.capacity_factor)
            w = w * keep
        else:
            y = self.experts(x2, idx)  # (N, k, H)
        out = (y * w[..., None]).sum(axis=-2).astype(x.dtype)
        if self.shared_expert is not None:
            out = out + self.shared_expert(x2)
        stats = router_stats(logits, idx, keep) if opts.stats else None
        return out.reshape(shape), stats

    def __call__(self, x, opts: Optional[MoEOptions] = None):
        """x (..., H) -> same shape; (out, stats) when opts.stats."""
        opts = opts or INFERENCE
        if opts.dispatch == "fused" and opts.stats:
            raise ValueError("router statistics come from the unfused dispatches")
        plan = None
        if opts.dispatch in ("auto", "fused") and not opts.stats:  # auto: the token count too
            tokens = x.size // x.shape[-1] if opts.dispatch == "auto" else None
            plan = self.plan(x.dtype, tokens)
        if plan is not None and (plan.fused or opts.dispatch == "fused"):
            out, stats = self._fused(x, plan), None
        else:
            out, stats = self._unfused(x, opts)
        return (out, stats) if opts.stats else out
