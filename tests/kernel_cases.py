"""One table of MoE FFN cases for the kernel parity tests, plus random weights and a float64
NumPy oracle of DESIGN.md §4 (routing, SwiGLU experts, shared expert).

GPU runs take the S/M/L widths; CPU runs take the tiny widths (the reference on CPU is
MLX's own gather_qmm, the emulator is one thread per GPU thread: both slow).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

import official

from mlx_mobilemoe.kernels import MoEWeights, QWeight
from mlx_mobilemoe.moe import MoE, MoEOptions

# (H, I, S, E): the presets' layer widths, and tiny ones whose odd tile fits are deliberate
WIDTHS = {
    "S": (768, 384, 1536, 60),
    "M": (1024, 512, 2048, 60),
    "L": (1280, 640, 2560, 60),
    "tiny": (64, 32, 64, 8),
    "tiny-odd": (96, 96, 160, 12),  # I and S not multiples of the 64-column tiles
}
TOKENS = (1, 2, 7, 64, 513)
KS = tuple(range(1, 9))

# Relative error ||out - ref|| / ||ref|| allowed, per op and activation dtype. Kernels keep
# float32 intermediates; the reference rounds them to the activation dtype.
TOL = {
    ("moe_ffn", "float32"): 1e-4,  # MLX CUDA gather_qmm (T > 1) is ~1e-5 off exact f32
    ("moe_ffn", "float16"): 3e-3,
    ("route_weights", "float32"): 1e-6,
}


# DESIGN.md §4's routing test vector, checked by the model's routing (tests/test_model.py),
# the kernels' (tests/test_kernels.py) and Swift's (NumericsTests.swift keeps a copy).
ROUTING_VECTOR = dict(logits=[0.0, np.log(3), -np.log(3), np.log(4)], bias=[0.0, 0.0, 1.0, 0.0],
                      k=2, scale=2.5, experts=[2, 3], weights=[0.5952, 1.9048])


@dataclass(frozen=True)
class Case:
    width: str
    T: int
    k: int
    shared: bool
    dtype: str = "float32"
    path: str = "auto"

    @property
    def id(self):
        return (f"{self.width}-T{self.T}-k{self.k}-{'sh' if self.shared else 'nosh'}"
                f"-{self.dtype}-{self.path}")


def gpu_cases():
    """The full table for a GPU: every width x T x k with the shared expert, both paths at
    the decode/prefill border tokens, and a slice without the shared expert and in fp16."""
    out = []
    for width, T, k in itertools.product(("S", "M", "L"), TOKENS, KS):
        out.append(Case(width, T, k, True))
    for width, T in itertools.product(("S", "M", "L"), TOKENS):
        out.append(Case(width, T, 4, False))
        out.append(Case(width, T, 4, True, "float16"))
    for width, T, path in itertools.product(("S", "L"), (1, 7, 64), ("decode", "prefill")):
        out.append(Case(width, T, 8, True, path=path))
    for width, T, k in itertools.product(("tiny", "tiny-odd"), TOKENS, (1, 2, 8)):
        out.append(Case(width, T, k, k != 2))
    return out


def cpu_reference_cases():
    """Reference vs the float64 oracle on CPU: tiny widths, every T and k."""
    out = [Case("tiny", T, k, True) for T in TOKENS for k in KS]
    out += [Case("tiny-odd", T, k, False) for T in (1, 7, 64) for k in (1, 3, 8)]
    return out


def emu_cases():
    """Kernel bodies on the CPU emulator: a few tiny cases through each path."""
    return [Case("tiny", 3, 2, True, path="decode"), Case("tiny", 3, 2, True, path="prefill"),
            Case("tiny-odd", 100, 4, False, path="prefill"),  # > 32 rows per expert, 2 chunks
            Case("tiny-odd", 2, 8, True, path="decode"),
            Case("tiny", 2, 1, True, "float16", path="decode")]


def random_qweight(rng, shape_out_in_words, fan_in, scale_dtype=np.float16):
    """Random int4 words [..., n/8] with fp16 scales [..., n/32] and biases = -8 * scales."""
    *lead, words = shape_out_in_words
    w = rng.integers(0, 2**32, size=(*lead, words), dtype=np.uint64).astype(np.uint32)
    s = (rng.uniform(0.5, 1.5, size=(*lead, words * 8 // 32)) / (4.6 * np.sqrt(fan_in)))
    s = mx.array(s.astype(scale_dtype))
    return QWeight(mx.array(w), s, -8 * s)


def random_moe(H, I, S, E, seed=0, shared=True, rsf=1.5, norm=True):
    rng = np.random.default_rng(seed)
    router = mx.array((rng.standard_normal((E, H)) * 2 / np.sqrt(H)).astype(np.float32))
    bias = mx.array((rng.standard_normal(E) * 0.1).astype(np.float32))
    gate_up = random_qweight(rng, (E, H, 2 * I // 8), H)
    down = random_qweight(rng, (E, I, H // 8), I)
    sg = su = sd = None
    if shared:
        sg = random_qweight(rng, (S, H // 8), H)
        su = random_qweight(rng, (S, H // 8), H)
        sd = random_qweight(rng, (H, S // 8), S)
    return MoEWeights(router, bias, gate_up, down, sg, su, sd, rsf, norm)


def reference(x, w: MoEWeights, k: int):
    """The plain-MLX forward the kernels replace: the MoE block's dropless dispatch."""
    return MoE.from_weights(w, k)(x, MoEOptions("dropless"))


def case_inputs(case: Case, seed=0):
    H, I, S, E = WIDTHS[case.width]
    w = random_moe(H, I, S, E, seed=seed, shared=case.shared)
    rng = np.random.default_rng(seed + 1)
    x = mx.array(rng.standard_normal((case.T, H)).astype(np.float32)).astype(
        getattr(mx, case.dtype))
    return x, w


def official_words(q: QWeight) -> QWeight:
    """The same weight as the official two's-complement bytes, viewed as uint32 words."""
    return QWeight(mx.bitwise_xor(q.weight, mx.array(0x88888888, dtype=mx.uint32)), q.scales)


# --- float64 oracle ---------------------------------------------------------------------

def dequant_np(q: QWeight) -> np.ndarray:
    """[..., n/8] words + [..., n/32] scales -> float64 [..., n], value = (nibble - 8) * s."""
    w = np.array(q.weight).astype(np.uint64)
    nib = (w[..., None] >> (4 * np.arange(8, dtype=np.uint64))) & 15
    vals = nib.reshape(*w.shape[:-1], -1).astype(np.float64) - 8
    s = np.repeat(np.array(q.scales).astype(np.float64), 32, axis=-1)
    return vals * s


def oracle_route(x, w: MoEWeights, k):
    """float64 routing of DESIGN.md §4 (tests/official.py's oracle)."""
    x = np.array(x.astype(mx.float32)).astype(np.float64)
    return official.route(x, np.array(w.router).astype(np.float64),
                          np.array(w.expert_bias).astype(np.float64), k,
                          w.routed_scaling_factor, w.norm_topk_prob)


def near_ties(x, w: MoEWeights, k, eps=1e-6) -> np.ndarray:
    """(T,) bool: tokens whose k-th and (k+1)-th biased router scores (float64) lie within
    eps. There the float32 summation order alone decides the k-th expert (the kernels and
    MLX's matmul add in different orders), so a kernel and the reference may both be right
    and differ; parity compares the other tokens and says how many were set aside."""
    E = w.router.shape[0]
    if k >= E:
        return np.zeros(x.shape[0], dtype=bool)
    xd = np.array(x.astype(mx.float32)).astype(np.float64)
    s = 1 / (1 + np.exp(-(xd @ np.array(w.router).astype(np.float64).T)))
    s = np.sort(s + np.array(w.expert_bias).astype(np.float64), axis=-1)[:, ::-1]
    return (s[:, k - 1] - s[:, k]) < eps


def oracle_moe(x, w: MoEWeights, k):
    """float64 MoE FFN of x (T, H)."""
    xd = np.array(x.astype(mx.float32)).astype(np.float64)
    idx, wts = oracle_route(x, w, k)
    gu, dn = dequant_np(w.gate_up), dequant_np(w.down)
    I = dn.shape[1]
    silu = lambda v: v / (1 + np.exp(-v))  # noqa: E731
    out = np.zeros_like(xd)
    for t in range(xd.shape[0]):
        for r in range(k):
            e = idx[t, r]
            g = xd[t] @ gu[e]
            out[t] += wts[t, r] * ((silu(g[:I]) * g[I:]) @ dn[e])
    if w.shared_gate is not None:
        hs = silu(xd @ dequant_np(w.shared_gate).T) * (xd @ dequant_np(w.shared_up).T)
        out += hs @ dequant_np(w.shared_down).T
    return out


def rel_err(out, ref) -> float:
    out = np.array(out.astype(mx.float32)).astype(np.float64) if isinstance(out, mx.array) else out
    ref = np.array(ref.astype(mx.float32)).astype(np.float64) if isinstance(ref, mx.array) else ref
    if not np.all(np.isfinite(out)):
        return float("inf")
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))
