"""The upcycling experiment (docs/upcycling.md): dense -> MoE, against two baselines.

1. dense: a Qwen3-layout dense model (trained by the train CLI as a one-expert MobileMoE with
   RoPE and qk-norm on every layer, which is exactly a Qwen3 with unit q/k-norm weights),
   written out as a Hugging Face Qwen3 folder (`upcycle.dense_to_qwen3`);
2. upcycled: `python -m mlx_mobilemoe.upcycle --from <that Qwen3 folder> --format mobilemoe`
   (half the FFN as a shared expert, the other half copied into E experts, top-1: the same
   active parameters, equal to the dense model at init), then the routers alone
   (configs/upcycle_router.yaml: Switch aux loss), then everything;
3. dense-continued: the dense model trained for the same extra tokens, same schedule;
4. scratch: a MobileMoE with the upcycled model's active and total parameters (shared 1/2
   FFN + top-2 of 2E experts of width 1/4 FFN), trained from scratch on all the tokens the
   dense path saw (pretraining + extra).
Held-out perplexity per domain (the last 5% of each file), tokens, active/total params.

    python scripts/upcycle_experiment.py --tokens DIR_OF_.tokens --tokenizer TOKDIR \
        --work runs/upx --out upcycle.json [--dense-budget 40] [--size small|tiny]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_mobilemoe import checkpoint  # noqa: E402
from mlx_mobilemoe import upcycle as U  # noqa: E402
from mlx_mobilemoe.train import data as D  # noqa: E402
from mlx_mobilemoe.train.__main__ import main as train_cli  # noqa: E402
from mlx_mobilemoe.moe import MoEOptions  # noqa: E402

SIZES = {  # the dense model; the MoEs follow from it
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64, intermediate_size=1024),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, intermediate_size=128),
}


def dense_model(size: str) -> dict:
    return dict(vocab_size=4096, **SIZES[size], intermediate_size_mlp=0, num_local_experts=1,
                num_experts_per_tok=1, rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None,
                max_position_embeddings=4096, no_rope_layers=[], routed_scaling_factor=1.0,
                norm_topk_prob=True, use_qk_norm=True, tie_word_embeddings=True)


def scratch_model(size: str, experts: int) -> dict:
    I = SIZES[size]["intermediate_size"]
    return dict(dense_model(size), intermediate_size=I // 4, intermediate_size_mlp=I // 2,
                num_local_experts=2 * experts, num_experts_per_tok=2)


def train(args: list) -> dict:
    t = time.time()
    rc = train_cli(args)
    if rc:
        raise SystemExit(f"train CLI failed ({rc}): {args}")
    out = Path([a for a in args if a.startswith("out=")][0][4:])
    rec = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rec if "loss" in r and "eval" not in r and not r.get("skipped")]
    return {"steps": len(steps), "tokens": int(sum(r["tokens"] for r in steps)),
            "final_train_loss": steps[-1]["loss"], "seconds": round(time.time() - t, 1),
            "out": str(out)}


DROPLESS = MoEOptions(dispatch="dropless")


def evaluate(folder, domains, seq_len: int, batches: int, bs: int = 32) -> dict:
    """Held-out perplexity per domain and overall (dropless, float32)."""
    model = checkpoint.load_model(folder)
    res, tot, n_tot = {}, 0.0, 0
    for d in domains:
        ce = n = 0.0
        for x, y, m in D.eval_windows(d.val, seq_len, bs, batches):
            logits = model(mx.array(x), moe=DROPLESS)
            c = nn.losses.cross_entropy(logits.astype(mx.float32), mx.array(y), reduction="none")
            mm = mx.array(m)
            ce, n = ce + (c * mm).sum().item(), n + mm.sum().item()
        res[d.name] = {"ppl": math.exp(ce / n), "tokens": int(n)}
        tot, n_tot = tot + ce, n_tot + n
    res["overall"] = {"ppl": math.exp(tot / n_tot), "tokens": int(n_tot)}
    res["params"] = model.args.param_counts()
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", required=True, help="folder of <domain>.tokens")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--work", default="runs/upcycle")
    p.add_argument("--out", default="upcycle_experiment.json")
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dense-steps", type=int, default=4000, help="upper bound")
    p.add_argument("--dense-budget", type=float, default=None,
                   help="seconds of dense pretraining (fixes its step count from its speed)")
    p.add_argument("--extra-frac", type=float, default=0.5,
                   help="extra tokens after pretraining, as a fraction of pretraining's")
    p.add_argument("--router-frac", type=float, default=0.2,
                   help="share of the extra steps that train the routers alone")
    p.add_argument("--cap", type=float, default=None, help="safety cap in seconds per run")
    p.add_argument("--eval-batches", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lr-extra", type=float, default=1e-3)
    a = p.parse_args(argv)

    work = Path(a.work)
    toks = sorted(Path(a.tokens).glob("*.tokens"))
    if not toks:
        raise SystemExit(f"{a.tokens}: no *.tokens folders")
    data = json.dumps([str(t) for t in toks])
    common = [f"tokenizer={a.tokenizer}", f"data={data}", f"seq_len={a.seq_len}",
              f"batch_size={a.batch}", "grad_accum=1", "eval_every=0", "eval_batches=1",
              "log_every=100", "save_every=0", "moe.dispatch=dropless", "align=line"]
    cap = [f"time_budget={a.cap}"] if a.cap else []
    runs = {}

    def model_arg(d):  # YAML 1.1 reads JSON's 1e-06 as a string; safe_dump writes 1.0e-06
        return "model=" + yaml.safe_dump(d, default_flow_style=True, width=1 << 20).strip()

    # 1. dense pretraining
    dense_steps = [f"steps={a.dense_steps}"] + (
        [f"time_budget={a.dense_budget}"] if a.dense_budget else cap)
    runs["dense"] = train(["configs/pretrain.yaml", model_arg(dense_model(a.size)),
                           f"out={work / 'dense'}", f"lr={a.lr}", "warmup=50",
                           *common, *dense_steps])
    N = runs["dense"]["steps"]
    M = max(2, round(N * a.extra_frac))
    R = max(1, round(M * a.router_frac))
    extra = [f"lr={a.lr_extra}", "warmup=20", *common, *cap]

    # 2. as a Hugging Face Qwen3 checkpoint, then upcycled from it
    U.dense_to_qwen3(checkpoint.load_model(work / "dense"), work / "dense-qwen3", a.tokenizer)
    up = work / "upcycled"
    rc = U.main(["--from", str(work / "dense-qwen3"), "--out", str(up), "--format", "mobilemoe",
                 "--experts", str(a.experts), "--top-k", "1", "--granular", "2",
                 "--shared", "1", "--noise", "0.01"])
    if rc:
        raise SystemExit("upcycle failed")
    runs["router"] = train(["configs/upcycle_router.yaml", f"model={up}",
                            f"out={work / 'up-router'}", f"steps={R}", "lr=1e-3", "warmup=5",
                            *common, *cap])
    runs["up_all"] = train(["configs/pretrain.yaml", f"model={work / 'up-router'}",
                            f"out={work / 'up-all'}", f"steps={M - R}", *extra])
    # 3. the dense model continued for the same extra tokens
    runs["dense_cont"] = train(["configs/pretrain.yaml", f"model={work / 'dense'}",
                                f"out={work / 'dense-cont'}", f"steps={M}", *extra])
    # 4. MobileMoE from scratch, equal active and total parameters, all the tokens
    runs["scratch"] = train(["configs/pretrain.yaml",
                             model_arg(scratch_model(a.size, a.experts)),
                             f"out={work / 'scratch'}", f"steps={N + M}", f"lr={a.lr}",
                             "warmup=50", *common, *cap])

    domains = [D.TokenFile.open(t) for t in toks]
    ev = {}
    for name, folder in (("dense", work / "dense"), ("upcycled_init", up),
                         ("upcycled_router", work / "up-router"),
                         ("upcycled_all", work / "up-all"),
                         ("dense_continued", work / "dense-cont"),
                         ("scratch", work / "scratch")):
        ev[name] = evaluate(folder, domains, a.seq_len, a.eval_batches)
        print(json.dumps({name: ev[name]["overall"]}), file=sys.stderr, flush=True)
    dense_p, up_p = ev["dense"]["params"], ev["upcycled_all"]["params"]
    res = {
        "date": datetime.date.today().isoformat(), "mlx": mx.__version__,
        "device": mx.device_info().get("device_name", str(mx.default_device())),
        "settings": vars(a), "steps": {"dense": N, "extra": M, "router": R},
        "runs": runs, "eval": ev,
        "capacity_increase": up_p["total"] / dense_p["total"] - 1,
        "active_params": {"dense": dense_p["active"], "upcycled": up_p["active"],
                          "scratch": ev["scratch"]["params"]["active"]},
    }
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in ("steps", "capacity_increase", "active_params")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
