"""Compare the default MoE and its dense baseline; optionally install the MoE as the bundled
model and plot its expert load.

python scripts/train_default_report.py runs/default [--install] [--plot docs/x.png]
Prints a markdown table of held-out perplexities per domain and writes <runs>/results.json.
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


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("runs")
    p.add_argument("--install", action="store_true",
                   help="copy the MoE checkpoint into mlx_mobilemoe/default_model")
    p.add_argument("--plot", help="write the MoE expert-load plot to this PNG")
    a = p.parse_args(argv)
    runs = Path(a.runs)
    moe, dense = run_info(runs / "moe"), run_info(runs / "dense")
    res = {"moe": moe, "dense": dense}
    (runs / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    for name, r in res.items():
        print(f"{name}: {r['params']['active'] / 1e6:.2f}M active / "
              f"{r['params']['total'] / 1e6:.2f}M total params, {r['steps']} steps, "
              f"{r['tokens'] / 1e6:.1f}M tokens, {r['train_seconds']:.0f}s, "
              f"final train loss {r['final_train_loss']:.3f}")
    print(table(moe, dense))
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
