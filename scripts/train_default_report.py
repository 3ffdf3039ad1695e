"""Compare the default MoE and its dense baseline; optionally install the MoE as the bundled
model and plot its expert load.

python scripts/train_default_report.py runs/default [--install] [--plot docs/x.png]
                                      [--gap 8192 [--data data-cache/default/tokens]]
Prints a markdown table of held-out perplexities per domain and writes <runs>/results.json.
--gap N adds each model's per-token loss on the first N training and first N held-out tokens
of every domain (how much of the held-out gap is memorisation).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OFFICIAL = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def run_info(run: Path) -> dict:
    from mlx_mobilemoe.config import ModelArgs

    args = ModelArgs.from_dict(json.loads((run / "config.json").read_text()))
    ev = json.loads((run / "eval.json").read_text())
    steps = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in steps if "tok_per_s" in r]
    return {"params": args.param_counts(), "eval": ev, "steps": ev.get("step"),
            "tokens": sum(r["tokens"] for r in train),
            "train_seconds": train[-1]["elapsed"] if train else None,
            "final_train_loss": sum(r["loss"] for r in train[-50:]) / max(1, len(train[-50:])),
            "tok_per_s_median": sorted(r["tok_per_s"] for r in train)[len(train) // 2]
            if train else None}


def table(moe: dict, dense: dict) -> str:
    rows = ["| held-out domain | tokens | MoE ppl | dense ppl |", "|---|---:|---:|---:|"]
    for name in [k for k in moe["eval"] if k not in ("step", "overall")] + ["overall"]:
        m, d = moe["eval"][name], dense["eval"][name]
        rows.append(f"| {name} | {m['tokens']} | {m['ppl']:.2f} | {d['ppl']:.2f} |")
    return "\n".join(rows)


def train_vs_heldout(run: Path, data: Path, n_tokens: int, seq_len: int = 512) -> dict:
    """Mean per-token loss on the first n_tokens of each domain's training and held-out split."""
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np

    from mlx_mobilemoe import load
    from mlx_mobilemoe.train.data import TokenFile, eval_windows

    model, _ = load(run, dtype=mx.float32)
    out = {}
    for folder in sorted(data.glob("*.tokens")):
        tf = TokenFile.open(folder)
        row = {}
        for split, toks in (("train", tf.train), ("held_out", tf.val)):
            total = count = 0.0
            for x, y, m in eval_windows(np.asarray(toks[: n_tokens + 1]), seq_len, 8):
                logits = model(mx.array(x)).astype(mx.float32)
                ce = nn.losses.cross_entropy(logits, mx.array(y), reduction="none")
                total += float((ce * mx.array(m)).sum())
                count += float(m.sum())
            row[split] = round(total / count, 4)
        out[tf.name] = row
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("runs")
    p.add_argument("--install", action="store_true",
                   help="copy the MoE checkpoint into mlx_mobilemoe/default_model")
    p.add_argument("--plot", help="write the MoE expert-load plot to this PNG")
    p.add_argument("--gap", type=int, default=0, metavar="N",
                   help="also report loss on N training vs N held-out tokens per domain")
    p.add_argument("--data", default=str(ROOT / "data-cache" / "default" / "tokens"),
                   help="the token folders the runs trained on (for --gap)")
    a = p.parse_args(argv)
    runs = Path(a.runs)
    moe, dense = run_info(runs / "moe"), run_info(runs / "dense")
    res = {"moe": moe, "dense": dense}
    if a.gap:
        for name, r in res.items():
            r["train_vs_held_out"] = train_vs_heldout(runs / name, Path(a.data), a.gap)
    (runs / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    for name, r in res.items():
        print(f"{name}: {r['params']['active'] / 1e6:.2f}M active / "
              f"{r['params']['total'] / 1e6:.2f}M total params, {r['steps']} steps, "
              f"{r['tokens'] / 1e6:.1f}M tokens, {r['train_seconds']:.0f}s, "
              f"final train loss {r['final_train_loss']:.3f}")
    print(table(moe, dense))
    if a.gap:
        print(f"\nper-token loss, first {a.gap} tokens (train / held-out):")
        print("| domain | MoE | dense |\n|---|---|---|")
        for d, m in moe["train_vs_held_out"].items():
            dd = dense["train_vs_held_out"][d]
            print(f"| {d} | {m['train']:.2f} / {m['held_out']:.2f} | "
                  f"{dd['train']:.2f} / {dd['held_out']:.2f} |")
    if a.plot:
        from mlx_mobilemoe.train.plot import plot_expert_load

        plot_expert_load(runs / "moe" / "metrics.jsonl", a.plot,
                         title="default MoE: expert load while training")
    if a.install:
        dest = ROOT / "mlx_mobilemoe" / "default_model"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir()
        for f in OFFICIAL:
            shutil.copy2(runs / "moe" / f, dest / f)
        size = sum(f.stat().st_size for f in dest.iterdir())
        print(f"installed {dest} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
