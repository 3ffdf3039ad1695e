"""Held-out perplexity of a float MobileMoE against its int4 versions, printed as JSON.

    python scripts/quant_report.py [--model FOLDER] [--text FILE] [--qat-steps 80]

float: the checkpoint as loaded. ptq_rtn / ptq_mse: post-training int4 (absmax / 7, or the
per-group MSE clip search). qat: a short run of the train CLI's qat stage from the float
weights on the training split, exported to the official layout and loaded back (what ships);
qat_fake_quant_a8: its training form with int8 per-token activations. float_ft: the same
fine-tune without fake quantization (midtrain stage), the control that separates "more
training" from "quantization". All are scored by mlx_mobilemoe.evaluate on the same
held-out tokens: the last 5% of the text file (and of any --data files) by bytes, cut at a
line boundary as training cuts it, in consecutive windows of --seq-len predictions (each
window scored from its own start), plus any --tasks (e.g. builtin). int4 models are scored
through their exact float32 dequantization (bit-identical weights, logits within 1e-4:
tests/test_export.py) unless --int4-kernels. Prints one table (models as columns) and JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_mobilemoe import checkpoint, evaluate, export, qat  # noqa: E402
from mlx_mobilemoe.train.data import split_bytes  # noqa: E402
from mlx_mobilemoe.train.qat_stage import load_qat_run  # noqa: E402

DEFAULT_TEXT = evaluate.DATA_DIR / "tinyshakespeare.txt"


def split_text(text: str, held_out: float = 0.05):
    """(train, held-out) as the train CLI splits its data: the last 5% by bytes, from the
    first line after the cut."""
    train, held = split_bytes(text.encode(), held_out)
    return train.decode(), held.decode()


def fine_tune(stage: str, model_dir, train_file, out, work, steps, seq_len, batch, lr,
              qat_settings=None) -> float:
    """A short run of the train CLI's `stage` from the float checkpoint (dropless routing, no
    weight decay, 10% warmup then cosine); returns the last training loss."""
    from mlx_mobilemoe.train import make_config, run

    extra = {"qat": qat_settings} if qat_settings else {}
    cfg = make_config(stage=stage, model=str(model_dir), data=str(train_file), out=str(out),
                      cache_dir=str(Path(work) / "cache"), steps=steps, seq_len=seq_len,
                      batch_size=batch, grad_accum=1, lr=lr, warmup=max(1, steps // 10),
                      weight_decay=0.0, eval_every=0, eval_batches=1,
                      log_every=max(1, steps // 5),
                      moe={"dispatch": "dropless", "balance_gamma": 0.0}, **extra)
    run(cfg)
    recs = [json.loads(r) for r in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if "loss" in r and "eval" not in r][-1]


def kv8_agreement(model, tok, prompt="ROMEO:", n=60, head_dim=None) -> dict:
    """Greedy tokens with the float KV cache against `--kv-bits 8` (generate's settings)."""
    from types import SimpleNamespace

    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from mlx_mobilemoe.generate import kv_cache_options

    runs = {}
    for bits in (None, 8):
        opts = kv_cache_options(SimpleNamespace(kv_bits=bits), model.args.head_dim)
        runs[bits] = [r.token for r in stream_generate(
            model, tok, tok.encode(prompt), max_tokens=n, sampler=make_sampler(temp=0.0),
            **opts)]
    same = next((i for i, (a, b) in enumerate(zip(runs[None], runs[8])) if a != b),
                min(len(runs[None]), len(runs[8])))
    return {"prompt": prompt, "greedy_tokens": n, "matching_prefix": same,
            "text_kv_float": tok.decode(runs[None]), "text_kv8": tok.decode(runs[8])}


def report(model_dir, text_file, seq_len=256, max_eval_tokens=None, qat_steps=80,
           batch=4, lr=1e-4, scales="learned", act_bits=8, control=True,
           int4_kernels=False, data=None, tasks=("ppl",), limit=100) -> dict:
    folder = checkpoint.resolve(model_dir)
    model, tok = checkpoint.load(folder)
    if model.args.is_quantized:
        raise SystemExit(f"{folder} is an int4 checkpoint; the report starts from float weights")
    train_text, held_text = split_text(Path(text_file).read_text())
    files = [Path(text_file)] + [Path(f) for f in data or []]
    eos = evaluate.eos_of(tok, folder)
    out = {"model": str(folder), "text": str(text_file), "data": [str(f) for f in files],
           "held_out_bytes": len(held_text.encode()), "seq_len": seq_len,
           "max_eval_tokens_per_domain": max_eval_tokens,
           "int4_scored_with": "quantized kernels" if int4_kernels else
           "exact float32 dequantization (q * s)", "ppl": {}, "seconds": {}, "evaluate": {}}

    def score(m) -> float:
        r = evaluate.evaluate(m, tok, tasks, data=files, seq_len=seq_len,
                              max_tokens=max_eval_tokens, limit=limit, eos=eos, quiet=True)
        out["evaluate"][current[0]] = r
        return r["perplexity"]["overall"]["ppl"] if r["perplexity"] else float("nan")

    def int4_score(m):
        return score(m if int4_kernels else qat.dequantize_model(m))

    current = [None]

    def timed(name, fn):
        t = time.time()
        current[0] = name
        out["ppl"][name] = round(fn(), 4)
        out["seconds"][name] = round(time.time() - t, 1)
        print(f"{name}: ppl {out['ppl'][name]} ({out['seconds'][name]}s)", file=sys.stderr,
              flush=True)

    timed("float", lambda: score(model))
    if model.args.head_dim % 32 == 0:
        out["kv_bits_8"] = kv8_agreement(model, tok)
    for method in ("rtn", "mse"):
        timed(f"ptq_{method}", lambda: int4_score(qat.ptq(qat.to_float(model), method)))

    work = Path(tempfile.mkdtemp(prefix="quant_report."))
    train_file = work / "train.txt"
    train_file.write_text(train_text)
    recipe = dict(steps=qat_steps, seq_len=seq_len, batch=batch, lr=lr)
    qs = {"scales": scales, "init": "mse", "act_bits": act_bits or 0}
    out["qat_recipe"] = dict(recipe, **qs, data="training split (first 95%) of --text")

    def run_qat():
        run_dir = work / "qat"
        out["qat_final_train_loss"] = round(fine_tune("qat", folder, train_file, run_dir, work,
                                                      qat_settings=qs, **recipe), 4)
        if act_bits:  # the training form, int8 per-token activations (an 8da4w runtime)
            current[0] = "qat_fake_quant_a8"
            out["ppl"]["qat_fake_quant_a8"] = round(score(load_qat_run(run_dir)), 4)
            current[0] = "qat"
        shipped = export.export_folder(run_dir, work / "qat_int4")  # what ships
        return int4_score(checkpoint.load_model(shipped))

    timed("qat", run_qat)
    if control:
        def run_control():
            run_dir = work / "float_ft"
            out["float_ft_final_train_loss"] = round(
                fine_tune("midtrain", folder, train_file, run_dir, work, **recipe), 4)
            return score(checkpoint.load_model(run_dir))
        timed("float_ft", run_control)
    shutil.rmtree(work, ignore_errors=True)

    p = out["ppl"]
    out["gap_vs_float_pct"] = {k: round(100 * (p[k] / p["float"] - 1), 2)
                               for k in p if k != "float"}
    if control:
        out["qat_gap_vs_float_ft_pct"] = round(100 * (p["qat"] / p["float_ft"] - 1), 2)
    out["table"] = evaluate.compare_table(out["evaluate"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="float checkpoint (default: bundled model)")
    p.add_argument("--text", default=str(DEFAULT_TEXT), help="text file; last 5%% held out")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--max-eval-tokens", type=int, default=None, help="per domain")
    p.add_argument("--data", nargs="*", default=[],
                   help="more files whose held-out split is scored too (not trained on)")
    p.add_argument("--tasks", nargs="+", default=["ppl"],
                   help="mlx_mobilemoe.evaluate tasks, e.g. ppl builtin")
    p.add_argument("--limit", type=int, default=100, help="rows per task")
    p.add_argument("--qat-steps", type=int, default=80)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--scales", choices=qat.SCALE_MODES, default="learned")
    p.add_argument("--act-bits", type=int, choices=[0, 8], default=8)
    p.add_argument("--no-control", action="store_true", help="skip the float fine-tune control")
    p.add_argument("--int4-kernels", action="store_true",
                   help="score int4 models with MLX's quantized matmuls (fast on a GPU; on "
                        "CPU they are ~20x slower than the exact float32 dequantization)")
    a = p.parse_args(argv)
    r = report(a.model, a.text, a.seq_len, a.max_eval_tokens, a.qat_steps, a.batch, a.lr,
               a.scales, a.act_bits or None, not a.no_control, a.int4_kernels, a.data,
               a.tasks, a.limit)
    print(r["table"], file=sys.stderr)
    print(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
