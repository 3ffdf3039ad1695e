"""Held-out perplexity of a float MobileMoE against its int4 versions, printed as JSON.

    python scripts/quant_report.py [--model FOLDER] [--text FILE] [--qat-steps 80]

float: the checkpoint as loaded. ptq_rtn / ptq_mse: post-training int4 (absmax / 7, or the
per-group MSE clip search). qat: a short run of the train CLI's qat stage from the float
weights on the training split, exported to the official layout and loaded back (what ships);
qat_fake_quant_a8: its training form with int8 per-token activations. float_ft: the same
fine-tune without fake quantization (midtrain stage), the control that separates "more
training" from "quantization". All are scored on the same held-out tokens: the last 5% of
the text file by bytes, cut at a line boundary, in non-overlapping windows of --seq-len
tokens (each window scored from its own start). int4 models are scored through their exact
float32 dequantization (bit-identical weights, logits within 1e-4: tests/test_export.py)
unless --int4-kernels.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_mobilemoe import checkpoint, export, qat  # noqa: E402
from mlx_mobilemoe.train.data import split_bytes  # noqa: E402
from mlx_mobilemoe.train.qat_stage import load_qat_run  # noqa: E402

# ../shared/data beside the checkout, as on the project's machines and in CI
DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def split_text(text: str, held_out: float = 0.05):
    """(train, held-out) as the train CLI splits its data: the last 5% by bytes, from the
    first line after the cut."""
    train, held = split_bytes(text.encode(), held_out)
    return train.decode(), held.decode()


def encode(tokenizer, text: str) -> mx.array:
    return mx.array(tokenizer.encode(text, add_special_tokens=False), dtype=mx.uint32)


def windows(tokens: mx.array, seq_len: int, max_tokens=None) -> mx.array:
    n = tokens.size // seq_len
    if max_tokens:
        n = min(n, max(1, max_tokens // seq_len))
    return tokens[: n * seq_len].reshape(n, seq_len)


def perplexity(model, wins: mx.array, batch: int = 8) -> float:
    nll, count = 0.0, 0
    for i in range(0, wins.shape[0], batch):
        x = wins[i: i + batch]
        logits = model(x[:, :-1])
        loss = nn.losses.cross_entropy(logits.astype(mx.float32), x[:, 1:], reduction="sum")
        nll += loss.item()
        count += x[:, 1:].size
    return math.exp(nll / count)


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
           int4_kernels=False) -> dict:
    folder = checkpoint.resolve(model_dir)
    model, tok = checkpoint.load(folder)
    if model.args.is_quantized:
        raise SystemExit(f"{folder} is an int4 checkpoint; the report starts from float weights")
    train_text, held_text = split_text(Path(text_file).read_text())
    wins = windows(encode(tok, held_text), seq_len + 1, max_eval_tokens)
    out = {"model": str(folder), "text": str(text_file),
           "held_out_bytes": len(held_text.encode()),
           "eval_tokens": int(wins.shape[0] * seq_len), "seq_len": seq_len,
           "int4_scored_with": "quantized kernels" if int4_kernels else
           "exact float32 dequantization (q * s)", "ppl": {}, "seconds": {}}

    def int4_ppl(m):
        return perplexity(m if int4_kernels else qat.dequantize_model(m), wins)

    def timed(name, fn):
        t = time.time()
        out["ppl"][name] = round(fn(), 4)
        out["seconds"][name] = round(time.time() - t, 1)

    timed("float", lambda: perplexity(model, wins))
    if model.args.head_dim % 32 == 0:
        out["kv_bits_8"] = kv8_agreement(model, tok)
    for method in ("rtn", "mse"):
        timed(f"ptq_{method}", lambda: int4_ppl(qat.ptq(qat.to_float(model), method)))

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
            out["ppl"]["qat_fake_quant_a8"] = round(perplexity(load_qat_run(run_dir), wins), 4)
        shipped = export.export_folder(run_dir, work / "qat_int4")  # what ships
        return int4_ppl(checkpoint.load_model(shipped))

    timed("qat", run_qat)
    if control:
        def run_control():
            run_dir = work / "float_ft"
            out["float_ft_final_train_loss"] = round(
                fine_tune("midtrain", folder, train_file, run_dir, work, **recipe), 4)
            return perplexity(checkpoint.load_model(run_dir), wins)
        timed("float_ft", run_control)
    shutil.rmtree(work, ignore_errors=True)

    p = out["ppl"]
    out["gap_vs_float_pct"] = {k: round(100 * (p[k] / p["float"] - 1), 2)
                               for k in p if k != "float"}
    if control:
        out["qat_gap_vs_float_ft_pct"] = round(100 * (p["qat"] / p["float_ft"] - 1), 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="float checkpoint (default: bundled model)")
    p.add_argument("--text", default=str(DEFAULT_TEXT), help="text file; last 5%% held out")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--max-eval-tokens", type=int, default=None)
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
               a.scales, a.act_bits or None, not a.no_control, a.int4_kernels)
    print(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
