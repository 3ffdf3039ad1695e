"""The fused MoE feed-forward: routing, k routed INT4 experts (SwiGLU) and the shared expert.

    y = sum_r w_r * down_{e_r}(silu(gate_{e_r}(x)) * up_{e_r}(x)) + shared(x)

Three homes, kept equal by tests/test_kernels.py (DESIGN.md §5):
- `moe_ffn_reference`: plain MLX ops (gather_qmm), every backend, differentiable in x;
- the kernel bodies in metal/moe_decode.h and metal/moe_prefill.h, built here for
  `mx.fast.metal_kernel` or `mx.fast.cuda_kernel` from the same text;
- `moe_ffn`: the dispatcher. Kernels on a Metal or CUDA GPU, the reference elsewhere or when
  MLX_MOBILEMOE_REFERENCE=1.

Decode (few tokens) is two launches; prefill is four (route, grouped gate_up + SwiGLU,
grouped down, combine). Kernels read the INT4 words and fp16 scales only (4.5 bits per
weight); MLX's `biases` (= -8 * scales for these checkpoints) are never read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from . import _build

GROUP, BITS = 32, 4
DECODE_MAX_TOKENS = 8  # at most this many tokens take the decode path


def _defines() -> dict:
    """Integer #defines of the bodies (literals and expressions of earlier ones)."""
    text = "".join(_build.read_source(f) for f in ("moe_common.h", "moe_decode.h", "moe_prefill.h"))
    out: dict = {}
    for name, expr in re.findall(r"^#define (MM_\w+) (.*?)\s*(?://.*)?$", text, re.M):
        expr = re.sub(r"\bMM_\w+\b", lambda m: str(out.get(m[0], m[0])), expr.strip())
        if re.fullmatch(r"[\d\s()+*/-]+", expr):
            out[name] = int(eval(expr.replace("/", "//")))  # our own header: digits and + - * /
    return out


try:
    _D = _defines()  # tile sizes, read from the bodies so that grids always match them
except FileNotFoundError:  # an install without metal/: the reference path only
    _D = {}


@dataclass
class QWeight:
    """INT4 g32 symmetric weight in MLX's affine layout (uint32 words, scales, biases)."""

    weight: mx.array
    scales: mx.array
    biases: Optional[mx.array] = None  # = -8 * scales; used by the reference only

    def mlx_biases(self):
        return self.biases if self.biases is not None else -8 * self.scales


@dataclass
class MoEWeights:
    """One MoE layer. Routed experts are [E, in, out] grouped along out (x @ W); the shared
    expert's linears are nn.Linear-shaped [out, in] grouped along in."""

    router: mx.array  # [E, H] float32
    expert_bias: mx.array  # [E] float32
    gate_up: QWeight  # [E, H, 2I/8]; gate columns first, then up
    down: QWeight  # [E, I, H/8]
    shared_gate: Optional[QWeight]  # [S, H/8]
    shared_up: Optional[QWeight]  # [S, H/8]
    shared_down: Optional[QWeight]  # [H, S/8]
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True

    def __post_init__(self):
        E, H, w2 = self.gate_up.weight.shape
        S = self.shared_gate.weight.shape[0] if self.shared_gate is not None else 0
        self.dims = (H, w2 * 8 // 2, S, E)  # (H, I, S, E); S = 0 without a shared expert

    def _qweights(self):
        return [q for q in (self.gate_up, self.down, self.shared_gate, self.shared_up,
                            self.shared_down) if q is not None]


# --- reference --------------------------------------------------------------------------

def route_reference(x, router, expert_bias, k: int, rsf: float, norm: bool):
    """x (N, H) -> expert indices (N, k) and float32 weights (N, k). Float32 throughout."""
    scores = mx.sigmoid(x.astype(mx.float32) @ router.T)
    idx = mx.argpartition(-(scores + expert_bias), kth=k - 1, axis=-1)[..., :k]
    idx = mx.stop_gradient(idx)
    w = mx.take_along_axis(scores, idx, axis=-1)
    if norm:
        w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
    return idx, w * rsf


def _qlinear(x, q: QWeight):
    return mx.quantized_matmul(x, q.weight, q.scales, q.mlx_biases(), transpose=True,
                               group_size=GROUP, bits=BITS)


def moe_ffn_reference(x: mx.array, w: MoEWeights, k: int) -> mx.array:
    """Plain-MLX MoE FFN for x (..., H), same dtype out."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    idx, wts = route_reference(x2, w.router, w.expert_bias, k, w.routed_scaling_factor,
                               w.norm_topk_prob)
    xe = x2[:, None, None, :]  # (N, 1, 1, H)
    gu = mx.gather_qmm(xe, w.gate_up.weight, w.gate_up.scales, w.gate_up.mlx_biases(),
                       rhs_indices=idx, transpose=False, group_size=GROUP, bits=BITS)
    g, u = mx.split(gu, 2, axis=-1)  # (N, k, 1, I)
    y = mx.gather_qmm(nn.silu(g) * u, w.down.weight, w.down.scales, w.down.mlx_biases(),
                      rhs_indices=idx, transpose=False, group_size=GROUP, bits=BITS)
    out = (y.squeeze(-2) * wts[..., None]).sum(axis=-2).astype(x.dtype)
    if w.shared_gate is not None:
        hs = nn.silu(_qlinear(x2, w.shared_gate)) * _qlinear(x2, w.shared_up)
        out = out + _qlinear(hs, w.shared_down)
    return out.reshape(shape)


# --- kernels ----------------------------------------------------------------------------

_X_DTYPES = (mx.float32, mx.float16)
_S_DTYPES = (mx.float32, mx.float16)
_SMALL = {}  # cached small inputs: dims/fp arrays, placeholders


def _small(key, make):
    if key not in _SMALL:
        _SMALL[key] = make()
    return _SMALL[key]


def kernel_supported(w: MoEWeights, k: int, dtype) -> Optional[str]:
    """None if the kernels can run this layer, else the reason they cannot."""
    if not _D:
        return "kernel sources (metal/*.h) not found"
    H, I, S, E = w.dims
    st = w.gate_up.scales.dtype
    if dtype not in _X_DTYPES:
        return f"activation dtype {dtype}"
    if st not in _S_DTYPES or any(q.scales.dtype != st for q in w._qweights()):
        return "scale dtypes differ or are not float16/float32"
    if any(q.weight.dtype != mx.uint32 for q in w._qweights()):
        return "weights are not packed uint32"
    if H % GROUP or I % GROUP or S % GROUP:
        return "H, I, S must be multiples of 32"
    if H > _D["MM_MAX_H"]:
        return f"H={H} > {_D['MM_MAX_H']}"
    if not 8 <= E <= _D["MM_MAX_E"] or not 1 <= k <= min(_D["MM_MAX_K"], E):
        return f"E={E}, k={k} outside 8..{_D['MM_MAX_E']}, 1..{_D['MM_MAX_K']}"
    if w.router.dtype != mx.float32 or w.expert_bias.dtype != mx.float32:
        return "router and expert_bias must be float32"
    return None


def _common(w: MoEWeights, T: int, k: int):
    H, I, S, E = w.dims
    dims = _small(("dims", T, H, I, S, E, k, w.norm_topk_prob), lambda: mx.array(
        [T, H, I, S, E, k, int(w.norm_topk_prob)] + [0] * 9, dtype=mx.int32))
    fp = _small(("fp", w.routed_scaling_factor), lambda: mx.array(
        [w.routed_scaling_factor] + [0.0] * 7, dtype=mx.float32))
    st = w.gate_up.scales.dtype
    if S:
        sh = [w.shared_gate.weight, w.shared_gate.scales, w.shared_up.weight,
              w.shared_up.scales, w.shared_down.weight, w.shared_down.scales]
    else:
        zw = _small(("zw",), lambda: mx.zeros((8,), mx.uint32))
        zs = _small(("zs", st), lambda: mx.zeros((8,), st))
        sh = [zw, zs] * 3
    return dims, fp, sh


def _cdiv(a, b):
    return -(-a // b)


_GATE_UP_DECODE = """
MM_SHARED_DECL float mm_xs[MM_MAX_H];
MM_SHARED_DECL float mm_red[MM_DEC_RED];
MM_SHARED_DECL float mm_scores[MM_MAX_E];
MM_SHARED_DECL int mm_ch[MM_MAX_K];
mm_moe_gate_up_decode<T, ST, OFFICIAL>(x, rw, eb, gu_w, gu_s, sg_w, sg_s, su_w, su_s, dims, fp,
    h, hs, sel, selw, mm_xs, mm_red, mm_scores, mm_ch, mm_tid, mm_gid, mm_lane, mm_warp);
"""
_DOWN_DECODE = """
MM_SHARED_DECL float mm_red[MM_DEC_RED];
MM_SHARED_DECL float mm_sh[MM_CT * 8];
MM_SHARED_DECL int mm_ch[MM_MAX_K];
MM_SHARED_DECL float mm_chw[MM_MAX_K];
mm_moe_down_decode<T, ST, OFFICIAL>(h, hs, sel, selw, dn_w, dn_s, sd_w, sd_s, dims, y,
    mm_red, mm_sh, mm_ch, mm_chw, mm_tid, mm_gid, mm_lane, mm_warp);
"""
_ROUTE = """
MM_SHARED_DECL float mm_scores[MM_NW * MM_MAX_E];
mm_moe_route<T>(x, rw, eb, dims, fp, sel, selw, mm_scores, mm_gid, mm_lane, mm_warp);
"""
_GATE_UP_PREFILL = """
MM_SHARED_DECL MM_ALIGNED float mm_as[MM_AS_SIZE];
MM_SHARED_DECL MM_ALIGNED float mm_bs[MM_BS_SIZE];
MM_SHARED_DECL int mm_list[MM_LIST_SIZE];
MM_SHARED_DECL int mm_tmp[MM_NW + 1];
mm_moe_gate_up_prefill<T, ST, OFFICIAL>(x, sel, gu_w, gu_s, sg_w, sg_s, su_w, su_s, dims,
    h, hs, mm_as, mm_bs, mm_list, mm_tmp, mm_tid, mm_gid, mm_lane, mm_warp);
"""
_DOWN_PREFILL = """
MM_SHARED_DECL MM_ALIGNED float mm_as[MM_AS_SIZE];
MM_SHARED_DECL MM_ALIGNED float mm_bs[MM_BS_SIZE];
MM_SHARED_DECL int mm_list[MM_LIST_SIZE];
MM_SHARED_DECL int mm_tmp[MM_NW + 1];
mm_moe_down_prefill<ST, OFFICIAL>(h, hs, sel, selw, dn_w, dn_s, sd_w, sd_s, dims, ys, ysh,
    mm_as, mm_bs, mm_list, mm_tmp, mm_tid, mm_gid, mm_lane, mm_warp);
"""
_COMBINE = """
mm_moe_combine<T>(ys, ysh, dims, y, mm_tid, mm_gid);
"""

_DEC, _PRE = ("moe_common.h", "moe_decode.h"), ("moe_common.h", "moe_prefill.h")
_SPECS = {  # name: (inputs, outputs, glue, bodies)
    "gate_up_decode": (["x", "rw", "eb", "gu_w", "gu_s", "sg_w", "sg_s", "su_w", "su_s",
                        "dims", "fp"], ["h", "hs", "sel", "selw"], _GATE_UP_DECODE, _DEC),
    "down_decode": (["h", "hs", "sel", "selw", "dn_w", "dn_s", "sd_w", "sd_s", "dims"], ["y"],
                    _DOWN_DECODE, _DEC),
    "route": (["x", "rw", "eb", "dims", "fp"], ["sel", "selw"], _ROUTE, _PRE),
    "gate_up_prefill": (["x", "sel", "gu_w", "gu_s", "sg_w", "sg_s", "su_w", "su_s", "dims"],
                        ["h", "hs"], _GATE_UP_PREFILL, _PRE),
    "down_prefill": (["h", "hs", "sel", "selw", "dn_w", "dn_s", "sd_w", "sd_s", "dims"],
                     ["ys", "ysh"], _DOWN_PREFILL, _PRE),
    "combine": (["ys", "ysh", "dims"], ["y"], _COMBINE, _PRE),
}


def _k(backend, name):
    return _build.kernel(backend, name, *_SPECS[name])


def _decode(x2, w: MoEWeights, k: int, backend: str, official: bool):
    T = x2.size // x2.shape[-1]  # x2 (..., H): the kernels index it flat
    H, I, S, E = w.dims
    dims, fp, sh = _common(w, T, k)
    st = w.gate_up.scales.dtype
    tpl = [("T", x2.dtype), ("ST", st), ("OFFICIAL", official)]
    hs_shape = (T, S) if S else (8,)
    g1 = T * (_cdiv(k * (I // 8), _D["MM_PT"]) + (_cdiv(S, _D["MM_RPB"]) if S else 0))
    h, hs, sel, selw = _build.launch(
        _k(backend, "gate_up_decode"),
        [x2, w.router, w.expert_bias, w.gate_up.weight, w.gate_up.scales, *sh[:4], dims, fp],
        [((T * k, I), mx.float32), (hs_shape, mx.float32), ((T * k,), mx.int32),
         ((T * k,), mx.float32)], g1, tpl)
    g2 = T * _cdiv(H // 8, _D["MM_CT"])
    (y,) = _build.launch(
        _k(backend, "down_decode"),
        [h, hs, sel, selw, w.down.weight, w.down.scales, *sh[4:], dims],
        [(x2.shape, x2.dtype)], g2, tpl)
    return y


def _prefill(x2, w: MoEWeights, k: int, backend: str, official: bool):
    T = x2.size // x2.shape[-1]
    H, I, S, E = w.dims
    dims, fp, sh = _common(w, T, k)
    st = w.gate_up.scales.dtype
    BM, BH = _D["MM_BM"], _D["MM_BH"]
    sel, selw = _build.launch(
        _k(backend, "route"), [x2, w.router, w.expert_bias, dims, fp],
        [((T * k,), mx.int32), ((T * k,), mx.float32)], _cdiv(T, _D["MM_NW"]), [("T", x2.dtype)])
    g = E * _cdiv(I, BH) + (_cdiv(T, BM) * _cdiv(S, BH) if S else 0)
    h, hs = _build.launch(
        _k(backend, "gate_up_prefill"),
        [x2, sel, w.gate_up.weight, w.gate_up.scales, *sh[:4], dims],
        [((T * k, I), mx.float32), ((T, S) if S else (8,), mx.float32)], g,
        [("T", x2.dtype), ("ST", st), ("OFFICIAL", official)])
    g = (E + (_cdiv(T, BM) if S else 0)) * _cdiv(H, 2 * BH)
    ys, ysh = _build.launch(
        _k(backend, "down_prefill"),
        [h, hs, sel, selw, w.down.weight, w.down.scales, *sh[4:], dims],
        [((T * k, H), mx.float32), ((T, H) if S else (8,), mx.float32)], g,
        [("ST", st), ("OFFICIAL", official)])
    (y,) = _build.launch(_k(backend, "combine"), [ys, ysh, dims], [(x2.shape, x2.dtype)],
                         _cdiv(T * H, _build.THREADS), [("T", x2.dtype)])
    return y


def moe_ffn(x: mx.array, w: MoEWeights, k: int, *, path: str = "auto",
            backend: Optional[str] = None, official: bool = False) -> mx.array:
    """Fused MoE FFN of x (..., H). path: 'auto' | 'decode' | 'prefill'. backend: None picks
    the GPU's ('metal'/'cuda') or the reference when there is none or it is forced; a
    registered name runs that backend. official=True reads the official two's-complement
    nibbles (weights given as the official bytes viewed as uint32)."""
    backend = _build.gpu_backend() if backend is None else backend
    if backend is None or kernel_supported(w, k, x.dtype) is not None:
        if official:
            raise ValueError("the reference reads MLX's layout only")
        return moe_ffn_reference(x, w, k)
    return _run(x, w, k, backend, path, official)


def _decode_sized(x) -> bool:
    """Few enough tokens for the decode path."""
    return x.size <= DECODE_MAX_TOKENS * x.shape[-1]


def _run(x, w: MoEWeights, k: int, backend: str, path: str = "auto", official: bool = False):
    """The kernels, no checks (moe_ffn and fused_moe check once). Same shape as x."""
    if path == "auto":
        path = "decode" if _decode_sized(x) else "prefill"
    return (_decode if path == "decode" else _prefill)(x, w, k, backend, official)


# --- the model's MoE module -------------------------------------------------------------

class _Memo:
    """Per-module cache (a plain attribute, not a parameter): the MoEWeights view of the
    module's arrays, which (k, dtype) the kernels support, and the built functions. `refs`
    are the (container, key, value) links from the module down to every array the kernels
    read; the memo holds while each container still holds the same object at its key."""

    def __init__(self, moe):
        self.refs, self.scalars = _module_refs(moe), self._scalars(moe)
        self.weights, self.ok, self.fns = weights_from_module(moe), {}, {}

    @staticmethod
    def _scalars(moe):
        return moe.routed_scaling_factor, moe.norm_topk_prob

    def valid(self, moe) -> bool:
        return all(c[k] is v for c, k, v in self.refs) and self.scalars == self._scalars(moe)


def _qw(mod) -> Optional[QWeight]:
    if "scales" not in mod or mod["weight"].dtype != mx.uint32:
        return None
    attrs = mod.__dict__  # nn.QuantizedLinear records these; the model's expert class does not
    if attrs.get("bits", BITS) != BITS or attrs.get("group_size", GROUP) != GROUP \
            or attrs.get("mode", "affine") != "affine":
        return None
    if mod["weight"].shape[-1] * 32 // BITS != mod["scales"].shape[-1] * GROUP:
        return None
    return QWeight(mod["weight"], mod["scales"], mod.get("biases"))


def _symmetric(q: QWeight) -> bool:
    return q.biases is None or mx.array_equal(q.biases, -8 * q.scales).item()


def weights_from_module(moe) -> Optional[MoEWeights]:
    """MoEWeights of a quantized `mlx_mobilemoe.model.MoE`, or None if it is not one the
    kernels can read (float or LoRA-wrapped experts, other bit widths, biases != -8 * scales)."""
    sh = moe.shared_expert
    mods = [moe.experts.gate_up, moe.experts.down]
    if sh is not None:
        mods += [sh.gate_proj, sh.up_proj, sh.down_proj]
    qs = [_qw(m) for m in mods]
    if None in qs or not all(_symmetric(q) for q in qs):
        return None
    qs += [None] * (5 - len(qs))
    return MoEWeights(moe.router["weight"], moe.expert_bias, *qs, moe.routed_scaling_factor,
                      moe.norm_topk_prob)


def _module_refs(moe) -> list:
    """(container, key, value) for each module on the way to, and each array read by, the
    kernels (item access: Module.__getattr__ is slow)."""
    refs = []

    def walk(parent, key):
        child = parent[key]
        refs.append((parent, key, child))
        return child

    walk(moe, "expert_bias")
    mods = [walk(moe, "router")]
    ex = walk(moe, "experts")
    mods += [walk(ex, "gate_up"), walk(ex, "down")]
    if "shared_expert" in moe:
        sh = walk(moe, "shared_expert")
        mods += [walk(sh, n) for n in ("gate_proj", "up_proj", "down_proj")]
    for m in mods:
        for k in list(m.keys()):
            if isinstance(m[k], mx.array):
                walk(m, k)
    return refs


def fused_moe(moe, x: mx.array) -> Optional[mx.array]:
    """The fused forward of the model's MoE module on x (..., H), or None when the kernels
    do not apply (no GPU backend, reference forced, float or unsupported weights).
    Differentiable in x: the gradient is the reference's (custom kernels have no VJP)."""
    backend = _build.gpu_backend()
    if backend is None:
        return None
    if not _D:
        raise RuntimeError(
            "fused MoE kernels: the kernel sources (metal/*.h) are missing from this install; "
            "reinstall mlx-mobilemoe, or set MLX_MOBILEMOE_REFERENCE=1 for the plain-MLX path")
    memo = moe.__dict__.get("_mm_memo")
    if memo is None or not memo.valid(moe):
        memo = _Memo(moe)
        object.__setattr__(moe, "_mm_memo", memo)
    w, k = memo.weights, moe.num_experts_per_tok
    if w is None:
        return None
    if (k, x.dtype) not in memo.ok:
        memo.ok[(k, x.dtype)] = kernel_supported(w, k, x.dtype) is None
    if not memo.ok[(k, x.dtype)]:
        return None
    fn = memo.fns.get((k, backend))
    if fn is None:
        fn = memo.fns[(k, backend)] = _with_reference_vjp(w, k, backend)
    return fn(x)


def moe_path(moe, dtype) -> str:
    """Which path the model's MoE module takes for activations of `dtype`, in words: the fused
    kernels ("fused int4 kernels (cuda)") or the plain-MLX reference, and why."""
    backend = _build.gpu_backend()
    if backend is None:
        return "plain MLX (" + ("MLX_MOBILEMOE_REFERENCE=1" if _build.reference_forced()
                                else "no Metal/CUDA device") + ")"
    w = weights_from_module(moe)
    if w is None:
        return "plain MLX (float or non-symmetric-int4 experts: the kernels need int4)"
    why = kernel_supported(w, moe.num_experts_per_tok, dtype)
    return f"plain MLX ({why})" if why else f"fused int4 kernels ({backend})"


def _with_reference_vjp(w: MoEWeights, k: int, backend: str):
    """The kernels as a differentiable function of x (the gradient is the reference's). At
    decode sizes it is called through `mx.compile`: decode runs once per token per layer
    with the same few shapes, and replaying the traced graph skips rebuilding it in Python
    (the custom_function, both launches and their small constant inputs), which costs more
    host time than the kernels take on the GPU. `mx.compile` keeps the custom VJP."""
    @mx.custom_function
    def f(x):
        return _run(x, w, k, backend)

    @f.vjp
    def f_vjp(primals, cotangent, output):  # one primal: MLX passes the array itself
        return mx.vjp(lambda v: moe_ffn_reference(v, w, k), [primals], [cotangent])[1][0]

    decode = mx.compile(f)

    def call(x):
        if _decode_sized(x) and _build.compiled_decode(backend):
            return decode(x)
        return f(x)

    return call
