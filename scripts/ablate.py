"""Ablation of MobileMoE's MoE choices at toy scale, and the planner's law fitted on it.

    python scripts/ablate.py prepare --out data-cache/ablate        # token files (CPU, once)
    python scripts/ablate.py run --data data-cache/ablate --out runs/ablate [--steps 250]
    python scripts/ablate.py report runs/ablate/results.json [--png docs/ablation.png]
                                   [--law mlx_mobilemoe/plan_law.json]

Every variant is a plan.Shape (dense FFN of width 4H split into g experts; E * g of them;
shared expert = g/2 of the active ones) at the same active parameters, trained by the train
CLI's pretrain stage with the same data, seed, batch, steps (so the same tokens) and a
constant learning rate after warmup, so the held-out loss at every eval point is the loss
after that many tokens. `run` trains the variants in priority order (the dense baseline and
the paper's E = 8, g = 8, shared first) until --budget-s is spent, writing results.json after
each. `report` prints the table, plots loss against tokens and fits the joint MoE law
(mlx_mobilemoe.plan.fit_law) on every (N, D, E, loss) point, writing the constants with
their provenance for `python -m mlx_mobilemoe.plan`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlx_mobilemoe.plan import LAW_FILE, Shape, fit_law  # noqa: E402

DOMAINS = {"tinyshakespeare": 0.15, "kjv": 0.25, "python-stdlib": 0.35, "gcide": 0.25}
GCIDE_MB = 4.0

# (size, E, g, shared), most informative first
VARIANTS = [
    ("A", 1, 1, False), ("A", 8, 8, True), ("A", 8, 8, False), ("A", 8, 1, False),
    ("A", 8, 4, True), ("A", 4, 8, True), ("A", 16, 8, True), ("A", 2, 8, True),
    ("A", 8, 2, True), ("B", 1, 1, False), ("B", 8, 8, True), ("B", 4, 8, True),
]
SIZES = {"A": (4, 128), "B": (6, 192), "tiny": (2, 64)}  # (layers, H)


def model_fields(s: Shape, vocab: int = 4096, context: int = 1024) -> dict:
    """The variant's config.json fields at toy scale (small vocabulary and RoPE base)."""
    a = s.args(vocab_size=vocab, max_position_embeddings=context, rope_theta=10000.0,
               rope_scaling=None, no_rope_layers=[], bos_token_id=None,
               eos_token_id=None).to_dict()
    for k in ("quantization", "model_type", "architectures", "bos_token_id", "eos_token_id"):
        a.pop(k, None)
    return a


def prepare(out: Path, data_dir: Path, tok_dir: Path) -> None:
    """Token files of the four corpora (gcide: its first GCIDE_MB MB; its three stray
    Windows-1252 bytes become U+FFFD) with the bundled model's tokenizer."""
    from mlx_mobilemoe.train.data import prepare_text

    out.mkdir(parents=True, exist_ok=True)
    text = out / "text"
    text.mkdir(exist_ok=True)
    for d in DOMAINS:
        src = data_dir / f"{d}.txt"
        if d == "gcide":
            raw = src.read_bytes()[: int(GCIDE_MB * 1e6)]
            raw = raw[: raw.rfind(b"\n") + 1]
            (text / "gcide.txt").write_text(raw.decode("utf-8", errors="replace"))
            src = text / "gcide.txt"
        tf = prepare_text(src, tok_dir, out / "tokens", 0.05, name=d)
        final = out / "tokens" / f"{d}.tokens"
        if tf.path != final:
            shutil.rmtree(final, ignore_errors=True)
            tf.path.rename(final)
        print(f"{d}: {tf.meta['train_tokens']} train / {tf.meta['val_tokens']} held-out tokens")
    shutil.copy(tok_dir / "tokenizer.json", out / "tokenizer.json")
    shutil.copy(tok_dir / "tokenizer_config.json", out / "tokenizer_config.json")
    shutil.rmtree(text)


def train_variant(size, E, g, shared, data: Path, out: Path, steps: int, batch: int,
                  seq_len: int, lr: float, evals: int, compile_: bool, eval_batches: int):
    from mlx_mobilemoe.config import ModelArgs
    from mlx_mobilemoe.train import make_config, run

    L, H = SIZES[size]
    s = Shape(L, H, E, g, shared)
    fields = model_fields(s)
    name = f"{size}-E{E}-g{g}-{'shared' if shared else 'noshared'}"
    cfg = make_config(stage="pretrain", model=fields, tokenizer=str(data),
                      data={str(data / "tokens" / f"{d}.tokens"): w for d, w in DOMAINS.items()},
                      out=str(out / name), cache_dir=str(out / "cache"), steps=steps,
                      seq_len=seq_len, batch_size=batch, lr=lr, min_lr_ratio=1.0,
                      warmup=max(1, steps // 20), eval_every=max(1, steps // evals),
                      eval_batches=eval_batches, log_every=max(1, steps // 5), seed=0,
                      compile=compile_, moe={"dispatch": "dropless"})
    t0 = time.time()
    res = run(cfg)
    secs = time.time() - t0
    recs = [json.loads(r) for r in (out / name / "metrics.jsonl").read_text().splitlines()]
    tok_per_step = batch * seq_len
    curve = [{"step": r["step"], "tokens": r["step"] * tok_per_step,
              "loss": r["eval"]["overall"]["loss"],
              "domains": {k: v["loss"] for k, v in r["eval"].items() if k != "overall"}}
             for r in recs if "eval" in r]
    p = ModelArgs.from_dict({**fields, "model_type": "mobilemoe"}).param_counts()
    embed = fields["vocab_size"] * fields["hidden_size"]
    train_loss = [r["loss"] for r in recs if "loss" in r and "eval" not in r]
    shutil.rmtree(out / name / "train_state", ignore_errors=True)
    return {"name": name, "size": size, "layers": L, "hidden": H, "E": E, "g": g,
            "shared": shared, "k": s.k, "routed": s.routed, "active": p["active"],
            "total": p["total"], "active_non_embedding": p["active"] - embed,
            "steps": steps, "tokens": steps * tok_per_step, "seconds": round(secs, 1),
            "final_train_loss": sum(train_loss[-10:]) / max(1, len(train_loss[-10:])),
            "curve": curve, "final": res["eval"]}


def cmd_run(a) -> int:
    import mlx.core as mx

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results_f = out / "results.json"
    res = {"settings": {k: v for k, v in vars(a).items() if k != "func"},
           "device": str(mx.default_device()), "mlx": mx.__version__,
           "date": time.strftime("%Y-%m-%d"), "runs": [], "not_run": []}
    t0 = time.time()
    variants = [v for v in VARIANTS if v[0] in a.sizes]
    if "tiny" in a.sizes:  # a smoke test: size A's variants at the tiny size
        variants += [("tiny",) + v[1:] for v in VARIANTS if v[0] == "A"]
    variants = variants[: a.max_variants or None]
    for i, v in enumerate(variants):
        spent = time.time() - t0
        per = spent / i if i else 0
        if spent + per > a.budget_s:
            res["not_run"] = [f"{s}-E{e}-g{g}-{'shared' if sh else 'noshared'}"
                              for s, e, g, sh in variants[i:]]
            print(f"budget: stopping before {len(variants) - i} variants", file=sys.stderr)
            break
        r = train_variant(*v, Path(a.data), out, a.steps, a.batch, a.seq_len, a.lr, a.evals,
                          not a.no_compile, a.eval_batches)
        res["runs"].append(r)
        print(f"[{i + 1}/{len(variants)}] {r['name']}: held-out loss {r['curve'][-1]['loss']:.4f}"
              f" ({r['seconds']}s)", file=sys.stderr, flush=True)
        results_f.write_text(json.dumps(res, indent=1) + "\n")
    results_f.write_text(json.dumps(res, indent=1) + "\n")
    return 0


def table(res: dict) -> str:
    runs = res["runs"]
    dense = {r["size"]: r["curve"][-1]["loss"] for r in runs if r["E"] == 1}
    rows = ["| variant | E | g | shared | k / routed | active (non-emb.) | total | "
            "held-out loss | vs dense | train loss |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        L = r["curve"][-1]["loss"]
        d = dense.get(r["size"])
        rows.append(f"| {r['name']} | {r['E']} | {r['g']} | {'yes' if r['shared'] else 'no'} | "
                    f"{r['k']} / {r['routed']} | {r['active_non_embedding'] / 1e6:.2f}M | "
                    f"{r['total'] / 1e6:.2f}M | {L:.4f} | "
                    + (f"{L - d:+.4f}" if d is not None and r["E"] > 1 else "—")
                    + f" | {r['final_train_loss']:.4f} |")
    return "\n".join(rows)


def plot(res: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in res["runs"]:
        c = r["curve"]
        style = "-" if r["size"] == "A" else "--"
        axes[0].plot([p["tokens"] / 1e6 for p in c], [p["loss"] for p in c], style,
                     label=r["name"], lw=2.2 if (r["E"], r["g"], r["shared"]) in
                     ((8, 8, True), (1, 1, False)) else 1.0)
    axes[0].set_xlabel("training tokens (M)")
    axes[0].set_ylabel("held-out loss")
    axes[0].legend(fontsize=6)
    axes[0].set_title("loss vs tokens (size A solid, B dashed)", fontsize=9)
    first = res["runs"][0]["size"]
    A = [r for r in res["runs"] if r["size"] == first]
    names = [r["name"].replace(f"{first}-", "") for r in A]
    axes[1].barh(names, [r["curve"][-1]["loss"] for r in A],
                 color=["C3" if (r["E"], r["g"], r["shared"]) == (8, 8, True) else
                        "C7" if r["E"] == 1 else "C0" for r in A])
    lo = min(r["curve"][-1]["loss"] for r in A)
    axes[1].set_xlim(lo - 0.05, max(r["curve"][-1]["loss"] for r in A) + 0.02)
    axes[1].set_xlabel(f"final held-out loss (size {first})")
    axes[1].set_title("equal active params and tokens (red: paper's E8 g8 shared)",
                      fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_report(a) -> int:
    res = json.loads(Path(a.results).read_text())
    print(table(res))
    if a.png:
        plot(res, a.png)
    pts = [(r["active_non_embedding"], p["tokens"], r["E"], p["loss"])
           for r in res["runs"] for p in r["curve"]]
    if len(pts) < 9:
        print(f"only {len(pts)} points: not fitting the law", file=sys.stderr)
        return 0
    N, D, E, y = zip(*pts)
    c = fit_law(N, D, E, y)
    law = {"form": "L = A Ê^δ N^(α+γ lnÊ) + B Ê^ω D^(β+ζ lnÊ) + c (arXiv 2502.05172); "
                   "N = active non-embedding params, D = tokens, Ê = Clark et al.'s "
                   "saturating E (E_start 1, E_max e_max)",
           "constants": {k: c[k] for k in ("A", "alpha", "gamma", "delta", "B", "beta",
                                           "zeta", "omega", "c", "e_max")},
           "fit": {"rmse": c["rmse"], "points": c["points"],
                   "method": "Levenberg-Marquardt, 24 starts, α, β < 0, ridge 1e-3 on δ γ ω ζ"},
           "provenance": {
               "summary": f"fitted on {len(res['runs'])} toy runs, "
                          f"{min(N) / 1e6:.1f}-{max(N) / 1e6:.1f}M active, "
                          f"{min(D) / 1e6:.2f}-{max(D) / 1e6:.1f}M tokens: extrapolating to "
                          "phone-size models is not validated",
               "script": "scripts/ablate.py", "results": str(a.results),
               "device": res.get("device"), "mlx": res.get("mlx"), "date": res.get("date"),
               "runs": [r["name"] for r in res["runs"]],
               "settings": res.get("settings")}}
    print(json.dumps(law["constants"], indent=1), f"rmse {c['rmse']:.4f} on {c['points']} "
          "points", file=sys.stderr)
    if a.law:
        Path(a.law).write_text(json.dumps(law, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    from mlx_mobilemoe.evaluate import DATA_DIR

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(required=True)
    q = sub.add_parser("prepare")
    q.add_argument("--out", default="data-cache/ablate")
    q.add_argument("--data-dir", default=str(DATA_DIR))
    q.add_argument("--tokenizer", default=str(ROOT / "mlx_mobilemoe" / "default_model"))
    q.set_defaults(func=lambda a: prepare(Path(a.out), Path(a.data_dir), Path(a.tokenizer))
                   or 0)
    r = sub.add_parser("run")
    r.add_argument("--data", default="data-cache/ablate")
    r.add_argument("--out", default="runs/ablate")
    r.add_argument("--sizes", nargs="+", default=["A", "B"], choices=list(SIZES))
    r.add_argument("--steps", type=int, default=250)
    r.add_argument("--batch", type=int, default=16)
    r.add_argument("--seq-len", type=int, default=256)
    r.add_argument("--lr", type=float, default=3e-3)
    r.add_argument("--evals", type=int, default=4, help="held-out evaluations per run")
    r.add_argument("--eval-batches", type=int, default=4, help="per domain and eval")
    r.add_argument("--budget-s", type=float, default=1e9, help="stop starting variants after")
    r.add_argument("--no-compile", action="store_true")
    r.add_argument("--max-variants", type=int, default=0, help="only the first N (0: all)")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("report")
    s.add_argument("results")
    s.add_argument("--png")
    s.add_argument("--law", default=None, help=f"write the fitted constants (e.g. {LAW_FILE})")
    s.set_defaults(func=cmd_report)
    a = p.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
