"""Adaptive experts-per-token, measured (docs/adaptive.md). JSON on stdout / --out, PNG plot.

Quality (a trained model, default the bundled one), per setting of k:
  held-out perplexity per domain (the last 5% of each file), top-1 agreement with the
  configured k (teacher-forced, every held-out position), greedy agreement with the
  configured k (free-running from held-out prompts: share of generated tokens equal to
  the configured-k continuation), experts actually used per token per layer, active expert
  FLOPs and int4 bytes per token.
Settings: global k = 4, 3, 2, 1 (the bundled model was trained with k = 2); confidence p
  (of the configured k, the smallest set whose renormalised weights reach p); the entropy
  gate (k = 1 after a token whose distribution had entropy < tau nats, else the configured k;
  teacher-forced, the gate reads the configured-k distribution of the previous position).
Speed and energy (--speed, a GPU): an S-shaped MobileMoE (random int4 weights, fp16
  activations, fused kernels; k = 4 as configured): decode tokens/s and GPU energy per token
  from NVML's energy counter, for k = 4, 3, 2, 1 and p = 0.9, interleaved rounds, medians.
  It is a data-centre GPU, not a phone: the ratios between settings are the result.

    python scripts/adaptive_report.py --tokens DIR_OF_.tokens [--model FOLDER] [--speed] \
        --out adaptive.json --plot adaptive.png
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_mobilemoe import adaptive as A  # noqa: E402
from mlx_mobilemoe import checkpoint  # noqa: E402
from mlx_mobilemoe.model import Model  # noqa: E402

INT4_BYTES = 0.5 + 2 / 32  # 4 bits + one fp16 scale per group of 32


class Counter:
    """Counts the experts the MoE blocks really weight (> 0) per token, by wrapping the one
    routing function (`mlx_mobilemoe.moe.route`) for the duration of a forward pass."""

    def __init__(self, model):
        self.model, self.used, self.rows = model, 0.0, 0

    def __enter__(self):
        import mlx_mobilemoe.moe as M

        self._m, self._orig = M, M.route

        def route(*args, **kw):
            idx, w = self._orig(*args, **kw)
            self.used += (w > 0).sum().item()
            self.rows += w.shape[0]
            return idx, w
        M.route = route
        return self

    def __exit__(self, *exc):
        self._m.route = self._orig

    @property
    def per_token_layer(self):
        return self.used / max(self.rows, 1)


def expert_cost(args, k_eff: float) -> dict:
    """Active expert FLOPs and int4 weight bytes per token (all layers): k_eff routed
    experts plus the shared expert, 2 FLOPs per multiply-add."""
    H, L = args.hidden_size, args.num_hidden_layers
    per = 3 * H * args.intermediate_size
    shared = 3 * H * args.intermediate_size_mlp
    w = L * (k_eff * per + shared)
    return {"expert_gflops": 2 * w / 1e9, "expert_mbytes_int4": w * INT4_BYTES / 1e6}


def setting(model, s):
    """Apply a setting: {"k": int} | {"p": float} | {"k_tokens": array}."""
    model.set_experts_per_token(s.get("k"))
    A.set_adaptive(model, top_p=s.get("p"), token_k=s.get("k_tokens"))


def quality(model, domains, seq_len, batches, prompts, gen, taus, ps, bs=16) -> list:
    k_cfg = model.args.num_experts_per_tok
    windows = {}
    for name, val in domains.items():
        from mlx_mobilemoe.train.data import eval_windows
        windows[name] = [(mx.array(x), mx.array(y), mx.array(m))
                         for x, y, m in eval_windows(val, seq_len, bs, batches)]
    # The configured-k pass: reference argmax and per-position entropy (for the gate).
    ref_top, ref_ent = {}, {}
    setting(model, {})
    for name, ws in windows.items():
        ref_top[name], ref_ent[name] = [], []
        for x, _, _ in ws:
            lg = model(x)
            ref_top[name].append(mx.argmax(lg, -1))
            ref_ent[name].append(A.entropy(lg))
        mx.eval(ref_top[name], ref_ent[name])
    settings = [{"name": f"k={k}", "k": k} for k in (4, 3, 2, 1)
                if k <= model.args.num_local_experts]
    settings += [{"name": f"p={p}", "p": p} for p in ps]
    settings += [{"name": f"entropy<{t}->k=1", "tau": t} for t in taus]
    rows = []
    for s in settings:
        row = {"setting": s["name"], "domains": {}}
        tot_ce = tot_n = agree = 0.0
        used = rows_n = 0.0
        for name, ws in windows.items():
            ce = n = 0.0
            for i, (x, y, m) in enumerate(ws):
                if "tau" in s:  # k for position t from the entropy at t-1 (first: full k)
                    e = ref_ent[name][i]
                    easy = mx.concatenate([mx.zeros((e.shape[0], 1), mx.bool_),
                                           e[:, :-1] < s["tau"]], axis=1)
                    setting(model, {"k_tokens": mx.where(easy, 1, k_cfg).reshape(-1)})
                else:
                    setting(model, s)
                with Counter(model) as c:
                    lg = model(x)
                    mx.eval(lg)
                used, rows_n = used + c.used, rows_n + c.rows
                cr = nn.losses.cross_entropy(lg.astype(mx.float32), y, reduction="none")
                ce += (cr * m).sum().item()
                n += m.sum().item()
                agree += ((mx.argmax(lg, -1) == ref_top[name][i]) * m).sum().item()
            row["domains"][name] = {"ppl": math.exp(ce / n), "tokens": int(n)}
            tot_ce, tot_n = tot_ce + ce, tot_n + n
        setting(model, {})
        row["ppl"] = math.exp(tot_ce / tot_n)
        row["top1_agreement"] = agree / tot_n
        row["experts_per_token_layer"] = used / rows_n
        row.update(expert_cost(model.args, row["experts_per_token_layer"]))
        if "tau" not in s:
            row["greedy_agreement"] = greedy_agreement(model, s, prompts, gen)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("setting", "ppl", "top1_agreement",
                                               "experts_per_token_layer")}),
              file=sys.stderr, flush=True)
    base = next(r for r in rows if r["setting"] == f"k={k_cfg}")
    for r in rows:
        r["ppl_change"] = r["ppl"] / base["ppl"] - 1
        r["flops_saving"] = 1 - r["expert_gflops"] / base["expert_gflops"]
    return rows


def _greedy(model, prompt, n):
    cache = model.make_cache()
    lg = model(prompt[None], cache=cache)[:, -1]
    out = []
    for _ in range(n):
        t = mx.argmax(lg, -1)
        out.append(int(t.item()))
        lg = model(t[None], cache=cache)[:, -1]
    return out


def greedy_agreement(model, s, prompts, n) -> float:
    setting(model, {})
    ref = [_greedy(model, p, n) for p in prompts]
    setting(model, s)
    got = [_greedy(model, p, n) for p in prompts]
    setting(model, {})
    return float(np.mean([np.mean(np.array(a) == np.array(b)) for a, b in zip(ref, got)]))


# --- speed and energy ---------------------------------------------------------------------

class Energy:
    """NVML's energy counter (millijoules since driver load) of GPU 0."""

    def __init__(self):
        import pynvml
        pynvml.nvmlInit()
        self.nv = pynvml
        self.h = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.name = pynvml.nvmlDeviceGetName(self.h)

    def joules(self) -> float:
        return self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h) / 1e3

    def watts(self) -> float:
        return self.nv.nvmlDeviceGetPowerUsage(self.h) / 1e3


def speed(size: str, tokens: int, rounds: int, ps) -> dict:
    from mlx_lm.generate import generate_step

    from mlx_mobilemoe import preset
    from mlx_mobilemoe.model import quantize_model

    try:
        meter = Energy()
    except Exception as e:  # noqa: BLE001 - reported, never hidden
        meter, why = None, f"NVML unavailable: {e!r}"
    mx.random.seed(0)
    model = quantize_model(Model(preset(size)))
    model.set_dtype(mx.float16)
    mx.eval(model.parameters())
    k_cfg = model.args.num_experts_per_tok
    settings = [{"name": f"k={k}", "k": k} for k in range(k_cfg, 0, -1)]
    settings += [{"name": f"p={p}", "p": p} for p in ps]
    prompt = mx.random.randint(0, model.args.vocab_size, (32,))

    def run(s, n):
        setting(model, s)
        t0 = e0 = None
        for i, _ in enumerate(generate_step(prompt, model, max_tokens=n)):
            if i == 0:
                mx.synchronize()
                t0, e0 = time.perf_counter(), meter.joules() if meter else None
        mx.synchronize()
        t1, e1 = time.perf_counter(), meter.joules() if meter else None
        setting(model, {})
        return {"tps": (n - 1) / (t1 - t0),
                "j_per_token": (e1 - e0) / (n - 1) if meter else None,
                "watts": (e1 - e0) / (t1 - t0) if meter else None}

    for s in settings:  # warm-up: compile every shape
        run(s, 16)
    idle = None
    if meter:
        time.sleep(0.5)
        e0, t0 = meter.joules(), time.perf_counter()
        time.sleep(2.0)
        idle = (meter.joules() - e0) / (time.perf_counter() - t0)
    res = {s["name"]: [] for s in settings}
    for _ in range(rounds):
        for s in settings:
            res[s["name"]].append(run(s, tokens))
    rows = []
    for s in settings:
        r = res[s["name"]]
        row = {"setting": s["name"], "decode_tps": statistics.median(x["tps"] for x in r),
               "decode_tps_range": [min(x["tps"] for x in r), max(x["tps"] for x in r)]}
        if meter:
            row["j_per_token"] = statistics.median(x["j_per_token"] for x in r)
            row["watts"] = statistics.median(x["watts"] for x in r)
            row["j_per_token_above_idle"] = statistics.median(
                x["j_per_token"] - idle / x["tps"] for x in r)
        setting(model, s)
        row["path"] = model.layers[0].feed_forward.plan(mx.float16).why
        setting(model, {})
        row.update(expert_cost(model.args, s.get("k", k_cfg)))
        rows.append(row)
    base = rows[0]
    for r in rows:
        r["tps_vs_full"] = r["decode_tps"] / base["decode_tps"]
        if meter:
            r["energy_saving"] = 1 - r["j_per_token"] / base["j_per_token"]
            r["energy_saving_above_idle"] = 1 - r["j_per_token_above_idle"] / \
                base["j_per_token_above_idle"]
    return {"model": f"MobileMoE-{size} shape, random int4 weights, fp16 activations",
            "gpu": meter.name if meter else None, "idle_watts": idle,
            "energy_error": None if meter else why, "decode_tokens": tokens,
            "rounds": rounds, "rows": rows}


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = res["quality"]["rows"]
    fig, axes = plt.subplots(1, 2 if res.get("speed") else 1, figsize=(11, 4.2), squeeze=False)
    ax = axes[0][0]
    for marker, pre in (("o", "k="), ("s", "p="), ("^", "entropy")):
        pts = [r for r in q if r["setting"].startswith(pre)]
        ax.plot([r["expert_gflops"] for r in pts], [100 * r["ppl_change"] for r in pts], marker,
                label=pre.rstrip("="))
        for r in pts:
            ax.annotate(r["setting"].replace("->k=1", ""), (r["expert_gflops"],
                                                             100 * r["ppl_change"]), fontsize=7)
    ax.axhline(2, ls=":", c="gray")
    ax.set_xlabel("active expert GFLOPs / token")
    ax.set_ylabel("held-out perplexity change vs configured k (%)")
    ax.set_title(f"quality: {res['quality']['model']}", fontsize=9)
    ax.legend(fontsize=8)
    if res.get("speed"):
        ax = axes[0][1]
        rows = res["speed"]["rows"]
        xs = range(len(rows))
        ax.bar(xs, [r["decode_tps"] for r in rows], color="tab:blue")
        ax.set_xticks(list(xs), [r["setting"] for r in rows])
        ax.set_ylabel("decode tokens/s", color="tab:blue")
        if rows[0].get("j_per_token") is not None:
            ax2 = ax.twinx()
            ax2.plot(list(xs), [1e3 * r["j_per_token"] for r in rows], "o-", c="tab:red")
            ax2.set_ylabel("GPU energy per token (mJ)", color="tab:red")
        ax.set_title(f"speed/energy: S shape on {res['speed']['gpu'] or 'GPU'} (not a phone)",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="trained MobileMoE folder (default: bundled)")
    p.add_argument("--tokens", required=True, help="folder of <domain>.tokens (held-out split)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--eval-batches", type=int, default=4, help="per domain, of 16 windows")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--gen", type=int, default=32)
    p.add_argument("--p", type=float, nargs="*", default=[0.5, 0.7, 0.9])
    p.add_argument("--tau", type=float, nargs="*", default=[0.5, 1.0, 2.0])
    p.add_argument("--speed", action="store_true", help="also speed and energy (GPU)")
    p.add_argument("--size", default="S")
    p.add_argument("--decode-tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None)
    p.add_argument("--plot", default=None)
    a = p.parse_args(argv)

    from mlx_mobilemoe.train.data import TokenFile

    model = checkpoint.load_model(a.model)
    domains = {t.name: t.val for t in map(TokenFile.open, sorted(Path(a.tokens).glob("*.tokens")))}
    if not domains:
        raise SystemExit(f"{a.tokens}: no *.tokens folders")
    rng = np.random.default_rng(0)
    prompts = []
    for val in domains.values():
        for s in rng.integers(0, len(val) - 64, max(1, a.prompts // len(domains))):
            prompts.append(mx.array(np.asarray(val[s:s + 32], dtype=np.int32)))
    res = {"date": datetime.date.today().isoformat(), "mlx": mx.__version__,
           "device": mx.device_info().get("device_name", str(mx.default_device())),
           "quality": {"model": a.model or "bundled default model",
                       "configured_k": model.args.num_experts_per_tok,
                       "rows": quality(model, domains, a.seq_len, a.eval_batches, prompts,
                                       a.gen, a.tau, a.p)}}
    if a.speed:
        res["speed"] = speed(a.size, a.decode_tokens, a.rounds, [0.9])
    text = json.dumps(res, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    if a.plot:
        plot(res, a.plot)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
