"""The fused MoE op: routing, k routed INT4 experts (SwiGLU) and the shared expert as GPU
kernels, on a weights view (`MoEWeights`), never on modules.

    y = sum_r w_r * down_{e_r}(silu(gate_{e_r}(x)) * up_{e_r}(x)) + shared(x)

The kernel bodies are in kernels/moe_decode.h and kernels/moe_prefill.h, built here for
`mx.fast.metal_kernel` or `mx.fast.cuda_kernel` from the same text. The plain-MLX forward
they are tested against (and whose gradient they take) is the MoE block's "dropless"
dispatch, mlx_mobilemoe/moe.py; `plan` says which of the two a layer takes and why.

Decode (few tokens) is two launches; prefill is four (route, grouped gate_up + SwiGLU,
grouped down, combine). Kernels read the INT4 words and fp16 scales only (4.5 bits per
weight); MLX's `biases` (= -8 * scales for these checkpoints) are never read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional, Union

import mlx.core as mx

from . import _build, table
from ._build import gpu_backend, reference_forced

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
    DEFINES = _defines()  # tile sizes, read from the bodies so that grids always match them
except FileNotFoundError:  # an install without kernels/: the plain-MLX path only
    DEFINES = {}


class KernelError(RuntimeError):
    """The fused kernels were asked for where they cannot run."""


@dataclass
class QWeight:
    """Symmetric INT4 g32 weight in MLX's affine layout (uint32 words, scales, biases), with
    the quantization settings its module records."""

    weight: mx.array
    scales: mx.array
    biases: Optional[mx.array] = None  # = -8 * scales; MLX's own ops read it, kernels do not
    bits: int = BITS
    group_size: int = GROUP
    mode: str = "affine"

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

    def qweights(self) -> list:
        return [q for q in (self.gate_up, self.down, self.shared_gate, self.shared_up,
                            self.shared_down) if q is not None]

    def arrays(self) -> list:
        """Every array of the view (what a cache of it must follow)."""
        out = [self.router, self.expert_bias]
        for q in self.qweights():
            out += [q.weight, q.scales] + ([q.biases] if q.biases is not None else [])
        return out


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
    if not DEFINES:
        return "kernel sources (kernels/*.h) not found"
    H, I, S, E = w.dims
    st = w.gate_up.scales.dtype
    if dtype not in _X_DTYPES:
        return f"activation dtype {dtype}"
    if st not in _S_DTYPES or any(q.scales.dtype != st for q in w.qweights()):
        return "scale dtypes differ or are not float16/float32"
    if any(q.weight.dtype != mx.uint32 for q in w.qweights()):
        return "weights are not packed uint32"
    if any((q.bits, q.group_size, q.mode) != (BITS, GROUP, "affine") for q in w.qweights()):
        return f"quantization other than {BITS}-bit affine, group size {GROUP}"
    if any(q.weight.shape[-1] * 32 // BITS != q.scales.shape[-1] * GROUP for q in w.qweights()):
        return "scales do not match the weights' groups"
    if H % GROUP or I % GROUP or S % GROUP:
        return "H, I, S must be multiples of 32"
    if H > DEFINES["MM_MAX_H"]:
        return f"H={H} > {DEFINES['MM_MAX_H']}"
    if not 8 <= E <= DEFINES["MM_MAX_E"] or not 1 <= k <= min(DEFINES["MM_MAX_K"], E):
        return f"E={E}, k={k} outside 8..{DEFINES['MM_MAX_E']}, 1..{DEFINES['MM_MAX_K']}"
    if w.router.dtype != mx.float32 or w.expert_bias.dtype != mx.float32:
        return "router and expert_bias must be float32"
    return None


def _arrays(w: MoEWeights, x2, k: int) -> tuple:
    """The buffers every launch may read, by the table's names, and the sizes."""
    H, I, S, E = w.dims
    T = x2.size // H  # x2 (..., H): the kernels index it flat
    dims = _small(("dims", T, H, I, S, E, k, w.norm_topk_prob), lambda: mx.array(
        [T, H, I, S, E, k, int(w.norm_topk_prob)] + [0] * 9, dtype=mx.int32))
    fp = _small(("fp", w.routed_scaling_factor), lambda: mx.array(
        [w.routed_scaling_factor] + [0.0] * 7, dtype=mx.float32))
    st = w.gate_up.scales.dtype
    zw = _small(("zw",), lambda: mx.zeros((8,), mx.uint32))  # shared slots without one
    zs = _small(("zs", st), lambda: mx.zeros((8,), st))
    a = {"x": x2, "rw": w.router, "eb": w.expert_bias, "dims": dims, "fp": fp,
         "gu_w": w.gate_up.weight, "gu_s": w.gate_up.scales,
         "dn_w": w.down.weight, "dn_s": w.down.scales}
    for n, q in (("sg", w.shared_gate), ("su", w.shared_up), ("sd", w.shared_down)):
        a[n + "_w"], a[n + "_s"] = (q.weight, q.scales) if S else (zw, zs)
    return a, dict(T=T, H=H, I=I, S=S, E=E, K=k)


def _launch(backend: str, name: str, a: dict, sizes: dict, tpl: dict) -> None:
    """Launch table.KERNELS[name] on the buffers in `a`; its outputs go into `a`."""
    k = table.KERNELS[name]
    key = (backend, name)
    if key not in _BUILT:
        _BUILT[key] = _build.kernel(backend, name, [b.name for b in k.inputs],
                                    [b.name for b in k.outputs], table.glue(k), k.headers)
    dtypes = {"float": mx.float32, "int": mx.int32, "T": tpl.get("T")}
    outs = _build.launch(
        _BUILT[key], [a[b.name] for b in k.inputs],
        [(table.output_shape(b, sizes, DEFINES), dtypes[b.type]) for b in k.outputs],
        table.evaluate(k.groups, sizes, DEFINES), [(t, tpl[t]) for t in k.template])
    a.update(zip((b.name for b in k.outputs), outs))


_BUILT: dict = {}


def _template(x2, w: MoEWeights, official: bool) -> dict:
    return {"T": x2.dtype, "ST": w.gate_up.scales.dtype, "OFFICIAL": official}


def route(x2, w: MoEWeights, k: int, backend: str):
    """The routing kernel alone (the prefill path's first launch): x2 (T, H) -> selected
    experts (T * k,) int32 and their combine weights (T * k,) float32."""
    a, sizes = _arrays(w, x2, k)
    _launch(backend, "route", a, sizes, _template(x2, w, False))
    return a["sel"], a["selw"]


def _path(names, x2, w: MoEWeights, k: int, backend: str, official: bool):
    a, sizes = _arrays(w, x2, k)
    tpl = _template(x2, w, official)
    for name in names:
        _launch(backend, name, a, sizes, tpl)
    return a["y"].reshape(x2.shape)


@dataclass(frozen=True)
class Plan:
    """The path a layer takes: `backend` runs the fused kernels, None the plain-MLX forward;
    `why` says it in words ("fused int4 kernels (cuda)", "plain MLX (reason)")."""

    backend: Optional[str]
    why: str

    @property
    def fused(self) -> bool:
        return self.backend is not None


def plan(w: Union[MoEWeights, str, None], k: int, dtype, backend: Optional[str]) -> Plan:
    """Where a layer with weights view `w` (or the reason it has none) runs, for top-k `k`,
    activations of `dtype` and `backend` (gpu_backend(): None without a usable GPU)."""
    if backend is None:
        return Plan(None, "plain MLX (" + ("MLX_MOBILEMOE_REFERENCE=1" if reference_forced()
                                          else "no Metal/CUDA device") + ")")
    if not DEFINES:
        raise KernelError(
            "fused MoE kernels: the kernel sources (kernels/*.h) are missing from this install; "
            "reinstall mlx-mobilemoe, or set MLX_MOBILEMOE_REFERENCE=1 for the plain-MLX path")
    why = w if isinstance(w, str) else kernel_supported(w, k, dtype)
    return Plan(None, f"plain MLX ({why})") if why else Plan(backend, f"fused int4 kernels ({backend})")


# Above this many routed rows per expert (T * k / E) "auto" dispatch takes the plain-MLX path:
# there MLX's own gather_qmm over expert-sorted tokens is faster than the prefill kernels.
# Measured on an H200 (docs/bench-nvidia-h200.md, 2026-12-01): fused faster at 64 (bundled
# model, 512 tokens: 51.3k vs 42.8k tok/s) and 137 rows (S, 2048 tokens: 21.7k vs 19.7k), slower
# at 256 (bundled model, 2048 tokens: 149k vs 160k); the bound sits between the last two.
PLAIN_ABOVE_ROWS_PER_EXPERT = 192


def rows_per_expert(tokens: int, k: int, num_experts: int) -> float:
    return tokens * k / num_experts


def moe_ffn(x: mx.array, w: MoEWeights, k: int, *, path: str = "auto",
            backend: Optional[str] = None, official: bool = False) -> mx.array:
    """The fused MoE FFN of x (..., H) on `backend` (None: the GPU's). path: 'auto' |
    'decode' | 'prefill'. official=True reads the official two's-complement nibbles (weights
    given as the official bytes viewed as uint32). KernelError where the kernels cannot run."""
    p = plan(w, k, x.dtype, gpu_backend() if backend is None else backend)
    if not p.fused:
        raise KernelError(f"the fused MoE kernels cannot run here: {p.why}")
    return run(x, w, k, p.backend, path, official)


def _decode_sized(x) -> bool:
    """Few enough tokens for the decode path."""
    return x.size <= DECODE_MAX_TOKENS * x.shape[-1]


def run(x, w: MoEWeights, k: int, backend: str, path: str = "auto", official: bool = False):
    """The kernels, no checks (callers `plan` once). Same shape as x."""
    if path == "auto":
        path = "decode" if _decode_sized(x) else "prefill"
    return _path(table.DECODE if path == "decode" else table.PREFILL, x, w, k, backend, official)


def differentiable(w: MoEWeights, k: int, backend: str, reference: Callable):
    """The kernels as a differentiable function of x whose gradient is `reference`'s (the
    plain-MLX forward of the same layer; custom kernels have no VJP). At decode sizes it is
    called through `mx.compile`: decode runs once per token per layer with the same few
    shapes, and replaying the traced graph skips rebuilding it in Python (the
    custom_function, both launches and their small constant inputs), which costs more host
    time than the kernels take on the GPU. `mx.compile` keeps the custom VJP."""
    @mx.custom_function
    def f(x):
        return run(x, w, k, backend)

    @f.vjp
    def f_vjp(primals, cotangent, output):  # one primal: MLX passes the array itself
        return mx.vjp(reference, [primals], [cotangent])[1][0]

    decode = mx.compile(f)

    def call(x):
        if _decode_sized(x) and _build.compiled_decode(backend):
            return decode(x)
        return f(x)

    return call
