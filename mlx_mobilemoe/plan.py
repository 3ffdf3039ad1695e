"""On-device planner: which MobileMoE shape fits a memory budget, and how good should it be.

    python -m mlx_mobilemoe.plan --memory-gb 1.5 --context 4096 [--active-params 300e6]
                                 [--bandwidth-gbs 60] [--tokens 1e12] [--top 20] [--json]

A shape is (layers, width H, expansion E, granularity g, shared expert on/off), built as the
paper builds S/M/L: a dense FFN of width 4H is split into g fine experts of width 4H/g; the
MoE holds E * g of them, of which g are active per token. With the shared expert, g/2 of
the active ones are one always-on expert (width 2H) and k = g/2 are routed among
E * g - g/2; without it, k = g are routed among E * g. E = 1 is the dense model. S is
(20, 768, E 8, g 8, shared); attention is 64-wide heads with 4 KV heads, as released.

Memory proxy (what a phone must hold): every weight at 4.5 bits (int4 + an fp16 scale per 32),
the int8 KV cache at the given context (mlx-lm's groups of 64 with fp16 scale and bias:
8.5 bits per element), and a stated fixed overhead for activations and the runtime.
FLOPs per token: 2 x active parameters (the tied head included) + attention over the
context. Decode ceiling: bandwidth / bytes read per token (active weights + the KV cache).
Predicted loss: the joint MoE law of arXiv 2502.05172,
    L(N, D, E) = A Ê^δ N^(α + γ ln Ê) + B Ê^ω D^(β + ζ ln Ê) + c,
N = active non-embedding parameters, D = training tokens, Ê the saturating transform of E
(Clark et al. 2022, E_start = 1). The constants are ours, fitted by scripts/ablate.py on toy
models (plan_law.json records how); granularity and the shared expert are not in the law.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .config import ConfigError, ModelArgs, preset

BITS_PER_WEIGHT = 4.5  # int4 + one fp16 scale per group of 32
KV_BITS = 8 + 2 * 16 / 64  # int8 + fp16 scale and bias per group of 64
OVERHEAD_GB = 0.25  # activations, runtime, tokenizer: the stated fixed overhead
HEAD_DIM, KV_HEADS, VOCAB = 64, 4, 128256
LAW_FILE = Path(__file__).with_name("plan_law.json")
LAW_KEYS = ("A", "alpha", "gamma", "delta", "B", "beta", "zeta", "omega", "c")


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    E: int  # expansion: total expert capacity / active capacity (1 = dense)
    g: int  # granularity: fine experts per dense FFN
    shared: bool

    def __post_init__(self):
        if self.E < 1 or self.g < 1 or self.layers < 1:
            raise ConfigError(f"{self}: layers, E and g must be >= 1")
        if self.hidden % HEAD_DIM or (4 * self.hidden) % self.g:
            raise ConfigError(f"{self}: H must be a multiple of {HEAD_DIM} and 4H of g")
        if self.shared and (self.g < 2 or self.g % 2):
            raise ConfigError(f"{self}: a shared expert needs an even g >= 2")
        if self.E == 1 and (self.g > 1 or self.shared):
            raise ConfigError(f"{self}: E = 1 is the dense model (g = 1, no shared expert)")

    @property
    def routed(self) -> int:
        return self.E * self.g - (self.g // 2 if self.shared else 0)

    @property
    def k(self) -> int:
        return self.g // 2 if self.shared else self.g

    def args(self, **over) -> ModelArgs:
        """The config.json of this shape (official vocabulary, attention and RoPE)."""
        width = 4 * self.hidden // self.g
        fields = dict(num_hidden_layers=self.layers, hidden_size=self.hidden,
                      num_attention_heads=self.hidden // HEAD_DIM, head_dim=HEAD_DIM,
                      num_key_value_heads=math.gcd(KV_HEADS, self.hidden // HEAD_DIM),
                      intermediate_size=width, num_local_experts=self.routed,
                      num_experts_per_tok=self.k,
                      intermediate_size_mlp=self.k * width if self.shared else 0)
        fields.update(over)
        return preset("S", **fields)  # S's vocabulary, attention and RoPE at this depth

    def name(self) -> str:
        if self.E == 1:
            return f"dense L{self.layers} H{self.hidden}"
        return (f"L{self.layers} H{self.hidden} E{self.E} g{self.g} "
                f"{'shared' if self.shared else 'no-shared'}")


def shape_of(args: ModelArgs) -> Optional[Shape]:
    """The Shape a config is, if it is one of this family."""
    H, w = args.hidden_size, args.intermediate_size
    if not w or (4 * H) % w:
        return None
    g = 4 * H // w
    shared = args.intermediate_size_mlp > 0
    total = args.num_local_experts + (args.intermediate_size_mlp // w if shared else 0)
    if total % g:
        return None
    try:
        s = Shape(args.num_hidden_layers, H, total // g, g, shared)
    except ConfigError:
        return None
    return s if (s.routed, s.k) == (args.num_local_experts, args.num_experts_per_tok) else None


PRESET_SHAPES = {name: shape_of(preset(name)) for name in ("S", "M", "L")}


# --- the numbers for one shape --------------------------------------------------------------

def kv_bytes(args: ModelArgs, context: int) -> float:
    """int8 KV cache (K and V, every layer) at `context` tokens."""
    elems = 2 * args.num_hidden_layers * args.num_key_value_heads * args.head_dim * context
    return elems * KV_BITS / 8


def measures(args: ModelArgs, context: int, bandwidth_gbs: Optional[float] = None,
             overhead_gb: float = OVERHEAD_GB) -> dict:
    p = args.param_counts()
    embed = args.vocab_size * args.hidden_size
    weights = p["total"] * BITS_PER_WEIGHT / 8
    kv = kv_bytes(args, context)
    attn_flops = 4 * args.num_hidden_layers * args.num_attention_heads * args.head_dim * context
    read = p["active"] * BITS_PER_WEIGHT / 8 + kv  # one decode token at full context
    out = {"total_params": p["total"], "active_params": p["active"],
           "active_non_embedding": p["active"] - embed,
           "weights_gb": weights / 1e9, "kv_gb": kv / 1e9,
           "memory_gb": weights / 1e9 + kv / 1e9 + overhead_gb,
           "gflops_per_token": (2 * p["active"] + attn_flops) / 1e9,
           "decode_read_mb": read / 1e6}
    if bandwidth_gbs:
        out["decode_ceiling_tok_s"] = bandwidth_gbs * 1e9 / read
    return out


# --- the joint MoE law ----------------------------------------------------------------------

def e_hat(E, e_max: float):
    """Clark et al.'s saturating expert count with E_start = 1: Ê(1) = 1, Ê -> e_max."""
    E = np.asarray(E, dtype=np.float64)
    return 1.0 / (1.0 / (E - 1.0 + 1.0 / (1.0 - 1.0 / e_max)) + 1.0 / e_max)


def law_loss(N, D, E, const: dict):
    """L = A Ê^δ N^(α + γ ln Ê) + B Ê^ω D^(β + ζ ln Ê) + c (numpy-broadcast)."""
    eh = e_hat(E, const["e_max"])
    le = np.log(eh)
    N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
    return (const["A"] * eh ** const["delta"] * N ** (const["alpha"] + const["gamma"] * le)
            + const["B"] * eh ** const["omega"] * D ** (const["beta"] + const["zeta"] * le)
            + const["c"])


def fit_law(N, D, E, loss, e_max: float = 64.0, ridge: float = 1e-3, iters: int = 300,
            starts: int = 24, seed: int = 0) -> dict:
    """Least squares fit of the law's nine constants (Levenberg-Marquardt from several
    starts). A, B, c are kept positive and α, β negative (a dense model's loss falls with N
    and D) by fitting their logs; `ridge` pulls the four E terms (δ, γ, ω, ζ) towards 0 so a
    small grid cannot make them arbitrary."""
    N, D, E, y = (np.asarray(v, np.float64) for v in (N, D, E, loss))
    if not (len(y) == len(N) == len(D) == len(E)) or len(y) < len(LAW_KEYS):
        raise ValueError(f"need >= {len(LAW_KEYS)} points of equal length, got {len(y)}")
    ln_n, ln_d = np.log(N), np.log(D)
    le = np.log(e_hat(E, e_max))

    def unpack(t):
        t = [float(v) for v in t]
        return dict(A=math.exp(t[0]), alpha=-math.exp(t[1]), gamma=t[2], delta=t[3],
                    B=math.exp(t[4]), beta=-math.exp(t[5]), zeta=t[6], omega=t[7],
                    c=math.exp(t[8]), e_max=e_max)

    def resid(t):
        a = t[0] + t[3] * le + (-np.exp(min(t[1], 5.0)) + t[2] * le) * ln_n
        b = t[4] + t[7] * le + (-np.exp(min(t[5], 5.0)) + t[6] * le) * ln_d
        r = np.exp(np.minimum(a, 50)) + np.exp(np.minimum(b, 50)) + math.exp(min(t[8], 50)) - y
        return np.concatenate([r, math.sqrt(ridge) * t[[2, 3, 6, 7]]])

    def jac(t, r0, h=1e-6):
        J = np.empty((r0.size, t.size))
        for i in range(t.size):
            tt = t.copy()
            tt[i] += h
            J[:, i] = (resid(tt) - r0) / h
        return J

    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for s in range(starts):
        t = np.array([math.log(rng.uniform(1, 100)), math.log(rng.uniform(0.05, 0.6)), 0.0, 0.0,
                      math.log(rng.uniform(1, 1000)), math.log(rng.uniform(0.05, 0.6)), 0.0, 0.0,
                      math.log(max(0.1, rng.uniform(0.2, 0.9) * y.min()))])
        lam = 1e-2
        r = resid(t)
        cost = r @ r
        for _ in range(iters):
            J = jac(t, r)
            g, Hm = J.T @ r, J.T @ J
            step = np.linalg.solve(Hm + lam * np.diag(np.diag(Hm) + 1e-12), -g)
            tn = t + step
            rn = resid(tn)
            cn = rn @ rn if np.all(np.isfinite(rn)) else np.inf
            if cn < cost:
                t, r, cost, lam = tn, rn, cn, lam / 3
                if np.abs(step).max() < 1e-9:
                    break
            else:
                lam *= 4
                if lam > 1e8:
                    break
        if cost < best_cost:
            best, best_cost = t, cost
    const = unpack(best)
    pred = law_loss(N, D, E, const)
    const["rmse"] = float(np.sqrt(np.mean((pred - y) ** 2)))
    const["points"] = int(len(y))
    return const


def load_law(path=LAW_FILE) -> Optional[dict]:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


# --- enumeration ----------------------------------------------------------------------------

LAYERS = tuple(range(12, 41, 2))
WIDTHS = (512, 640, 768, 896, 1024, 1152, 1280, 1536, 1792, 2048)
EXPANSIONS = (1, 2, 4, 8, 16, 32)
GRANULARITIES = (1, 2, 4, 8, 16)


def shapes(layers=LAYERS, widths=WIDTHS, expansions=EXPANSIONS, grans=GRANULARITIES):
    for L, H, E, g, sh in itertools.product(layers, widths, expansions, grans, (True, False)):
        try:
            yield Shape(L, H, E, g, sh)
        except ConfigError:
            continue


def plan(memory_gb: float, context: int, active_params: Optional[float] = None,
         bandwidth_gbs: Optional[float] = None, tokens: float = 1e12,
         overhead_gb: float = OVERHEAD_GB, law: Optional[dict] = None,
         tolerance: float = 0.2, candidates=None) -> list:
    """Shapes that fit `memory_gb` at `context` (and within `tolerance` of `active_params`),
    best predicted loss first (largest active size first without a law)."""
    rows = []
    marks = {s: n for n, s in PRESET_SHAPES.items()}
    for s in candidates if candidates is not None else shapes():
        m = measures(s.args(), context, bandwidth_gbs, overhead_gb)
        if m["memory_gb"] > memory_gb:
            continue
        if active_params and abs(m["active_params"] / active_params - 1) > tolerance:
            continue
        row = {"shape": s.name(), "preset": marks.get(s, ""), **asdict(s), "k": s.k,
               "routed_experts": s.routed, **m}
        if law:
            row["predicted_loss"] = float(law_loss(m["active_non_embedding"], tokens, s.E,
                                                   law["constants"]))
        rows.append(row)
    key = (lambda r: r["predicted_loss"]) if law else (lambda r: -r["active_params"])
    return sorted(rows, key=key)


def table(rows: list, top: int) -> str:
    has_loss = any("predicted_loss" in r for r in rows)
    has_bw = any("decode_ceiling_tok_s" in r for r in rows)
    head = ["#", "shape", "", "active", "total", "memory GB", "GFLOP/tok"]
    head += ["decode tok/s ceiling"] * has_bw + ["pred. loss"] * has_loss
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows[:top]):
        cells = [str(i + 1), r["shape"], r["preset"], f"{r['active_params'] / 1e6:.1f}M",
                 f"{r['total_params'] / 1e9:.3f}B", f"{r['memory_gb']:.3f}",
                 f"{r['gflops_per_token']:.2f}"]
        if has_bw:
            cells.append(f"{r['decode_ceiling_tok_s']:.0f}")
        if has_loss:
            cells.append(f"{r['predicted_loss']:.3f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--memory-gb", type=float, required=True, help="memory the app may use")
    p.add_argument("--context", type=int, required=True, help="tokens of KV cache to hold")
    p.add_argument("--active-params", type=float, help="keep shapes within --tolerance of it")
    p.add_argument("--tolerance", type=float, default=0.2)
    p.add_argument("--bandwidth-gbs", type=float, help="memory bandwidth for the decode ceiling")
    p.add_argument("--tokens", type=float, default=1e12, help="training tokens D for the law")
    p.add_argument("--overhead-gb", type=float, default=OVERHEAD_GB)
    p.add_argument("--law", default=str(LAW_FILE), help="fitted constants (plan_law.json)")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--json", help="also write every fitting shape to this JSON file")
    a = p.parse_args(argv)
    law = load_law(a.law)
    if law is None:
        print(f"no fitted law at {a.law}: ranking by active parameters "
              "(run scripts/ablate.py to fit one)", file=sys.stderr)
    rows = plan(a.memory_gb, a.context, a.active_params, a.bandwidth_gbs, a.tokens,
                a.overhead_gb, law, a.tolerance)
    if not rows:
        print(f"no shape fits {a.memory_gb} GB at context {a.context}", file=sys.stderr)
        return 1
    print(f"{len(rows)} shapes fit {a.memory_gb} GB with {a.context} tokens of int8 KV "
          f"(weights at {BITS_PER_WEIGHT} bits, {a.overhead_gb} GB overhead)"
          + (f"; loss predicted at D = {a.tokens:.3g} tokens by a law fitted with rmse "
             f"{law['fit']['rmse']:.3f} ({law['provenance']['summary']})" if law else ""))
    print(table(rows, a.top))
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "law": law, "rows": rows},
                                           indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
