"""Profile a MobileMoE on this machine: speed against context, memory with real vs dummy
prompts, and which experts each domain uses.

    python -m mlx_mobilemoe.profile --model X [--contexts 256 512 ...] [--json out.json]
                                    [--heatmap experts.png] [--swift .build/release/mobilemoe]
    python -m mlx_mobilemoe.profile --random S ...     (a random int4 MobileMoE-S, no download)

For every context C (default 256, 512, ..., up to the model's limit and 8192) and both prompt
kinds — real (held-out text of the corpora, tokenized) and dummy (one token repeated, what
many benchmarks feed) — it runs mlx-lm's generate_step after a warm-up of the same shape and
records prefill tokens/s (C / time to the first token), decode tokens/s (the tokens after the
first / their time), MLX's peak memory, the process's peak RSS (Linux: VmHWM, reset before
each run through /proc/self/clear_refs) and the experts the prompt routes to: distinct
(layer, expert) pairs touched, and the bytes of expert weights they live in, which is what
a runtime that maps the weights from disk (the Swift CLI) must page in.
--swift BIN runs the Swift CLI (`swift build -c release`) on the same real and dummy text
and records its peak RSS from the kernel (wait4), since its weights are mmapped.
Expert utilisation per domain: the share of routing selections each expert of each layer
gets on each corpus, as JSON and as a heatmap PNG (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np

from . import evaluate as E
from .moe import MoEOptions

STATS = MoEOptions("dropless", stats=True)

DOMAINS = ("tinyshakespeare", "kjv", "python-stdlib", "gcide")


# --- memory readings ---------------------------------------------------------------------

def _proc_status(key: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peaks() -> None:
    mx.reset_peak_memory()
    try:  # Linux: "5" resets the peak resident set size (VmHWM) to the current one
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss() -> Optional[int]:
    hwm = _proc_status("VmHWM")
    if hwm is not None:
        return hwm
    import resource  # macOS: bytes, never reset

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --- prompts -----------------------------------------------------------------------------

def real_tokens(tok, data_dir, n: int, eos=None, held_out: float = 0.05) -> np.ndarray:
    """n tokens of held-out text, the domains interleaved in blocks of 256 so any prefix
    holds all of them."""
    per = []
    for d in DOMAINS:
        f = Path(data_dir) / f"{d}.txt"
        if f.exists():
            per.append(E.doc_tokens(tok, E.heldout_docs(f, held_out), eos))
    if not per:
        raise E.EvalError(f"no corpora in {data_dir} for real prompts (pass --data-dir)")
    out, i = [], 0
    while sum(len(o) for o in out) < n:
        for p in per:
            out.append(p[i * 256:(i + 1) * 256])
        i += 1
        if all(len(p) <= i * 256 for p in per):
            break
    toks = np.concatenate(out)
    if len(toks) < n:
        toks = np.tile(toks, n // len(toks) + 1)
    return toks[:n]


def dummy_tokens(tok, n: int) -> np.ndarray:
    """One ordinary token repeated (the word ' the'), as in dummy-prompt benchmarks."""
    ids = tok.encode(" the", add_special_tokens=False) if tok is not None else [100]
    return np.full(n, ids[-1], dtype=np.int64)


# --- speed and memory --------------------------------------------------------------------

def run_once(model, prompt: np.ndarray, decode: int) -> dict:
    from mlx_lm.generate import generate_step

    reset_peaks()
    ids = mx.array(prompt.astype(np.int32))
    t0 = time.perf_counter()
    t_first, n = None, 0
    for tok, _ in generate_step(ids, model, max_tokens=decode,
                                sampler=lambda lp: mx.argmax(lp, axis=-1)):
        if t_first is None:
            t_first = time.perf_counter()
        n += 1
    t_end = time.perf_counter()
    return {"prefill_tok_s": len(prompt) / (t_first - t0),
            "decode_tok_s": (n - 1) / (t_end - t_first) if n > 1 else None,
            "ttft_s": t_first - t0, "mlx_peak_gb": mx.get_peak_memory() / 1e9,
            "rss_peak_gb": (peak_rss() or 0) / 1e9}


def experts_touched(model, prompt: np.ndarray, chunk: int = 2048) -> dict:
    """Distinct (layer, expert) pairs the prompt routes to, and the bytes of those experts'
    weights (as stored), against all experts."""
    E_ = model.args.num_local_experts
    L = model.args.num_hidden_layers
    load = np.zeros((L, E_))
    for s in range(0, len(prompt), chunk):
        x = mx.array(prompt[None, s:s + chunk].astype(np.int32))
        _, st = model(x, moe=STATS)
        load += np.array(st["load"])
    ff = model.layers[0].feed_forward.experts
    per_expert = sum(v.nbytes for v in _leaves(ff)) / E_
    touched = int((load > 0).sum())
    return {"pairs_touched": touched, "pairs_total": L * E_,
            "fraction": touched / (L * E_),
            "expert_bytes_touched_gb": touched * per_expert / 1e9,
            "expert_bytes_total_gb": L * E_ * per_expert / 1e9}


def _leaves(module):
    from mlx.utils import tree_flatten

    return [v for _, v in tree_flatten(module.parameters())]


def default_contexts(limit: int) -> list:
    out, c = [], 256
    while c <= min(limit, 8192):
        out.append(c)
        c *= 2
    return out


class Progress:
    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.time()

    def step(self, what: str):
        self.done += 1
        el = time.time() - self.t0
        eta = el / self.done * (self.total - self.done)
        print(f"[{self.done}/{self.total}] {what} ({el:.0f}s, {self.done / el:.2f}/s, "
              f"ETA {eta:.0f}s)", file=sys.stderr, flush=True)


def speed_memory(model, tok, contexts, decode=32, data_dir=E.DATA_DIR, eos=None,
                 rounds=1, held_out=0.05) -> list:
    real = real_tokens(tok, data_dir, max(contexts), eos, held_out)
    prog = Progress(len(contexts) * 2 * rounds)
    rows = []
    for C in contexts:
        for kind, toks in (("real", real[:C]), ("dummy", dummy_tokens(tok, C))):
            run_once(model, toks, 2)  # warm-up of the same shape
            runs = []
            for _ in range(rounds):
                runs.append(run_once(model, toks, decode))
                prog.step(f"context {C} {kind}: prefill {runs[-1]['prefill_tok_s']:.0f} "
                          f"tok/s, decode {runs[-1]['decode_tok_s'] or 0:.1f} tok/s")
            med = {k: float(np.median([r[k] for r in runs if r[k] is not None] or [np.nan]))
                   for k in runs[0]}
            rows.append({"context": C, "prompt": kind, **med,
                         "experts": experts_touched(model, toks)})
    return rows


# --- expert utilisation per domain -------------------------------------------------------

def utilisation(model, tok, data_dir=E.DATA_DIR, tokens=4096, eos=None,
                held_out=0.05) -> dict:
    """{domain: (L, E) share of the selections of each layer}, from held-out text."""
    out = {}
    for d in DOMAINS:
        f = Path(data_dir) / f"{d}.txt"
        if not f.exists():
            continue
        toks = E.doc_tokens(tok, E.heldout_docs(f, held_out), eos)[:tokens]
        load = np.zeros((model.args.num_hidden_layers, model.args.num_local_experts))
        for s in range(0, len(toks), 512):
            _, st = model(mx.array(toks[None, s:s + 512].astype(np.int32)), moe=STATS)
            load += np.array(st["load"])
        out[d] = (load / load.sum(1, keepdims=True)).tolist()
    return out


def plot_heatmap(util: dict, path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(util)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    vmax = max(np.max(util[n]) for n in names)
    for i, (ax, n) in enumerate(zip(axes[0], names)):
        im = ax.imshow(np.array(util[n]), aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(n, fontsize=9)
        ax.set_xlabel("expert")
        if i == 0:
            ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes[0].tolist(), label="share of the layer's selections")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# --- the Swift CLI -----------------------------------------------------------------------

def swift_rss(binary, model_dir, text: str, max_tokens: int = 8, backend="cpu") -> dict:
    """Run the Swift CLI once on `text` (raw, greedy) and read its peak RSS from wait4."""
    cmd = [str(binary), "--model", str(model_dir), "--prompt", text, "--raw",
           "--max-tokens", str(max_tokens), "--temperature", "0", "--backend", backend]
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    err = p.stderr.read().decode(errors="replace")
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({p.returncode}): {err[-500:]}")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    stats = [ln for ln in err.splitlines() if ln.startswith("prompt:")]
    return {"rss_peak_gb": ru.ru_maxrss * scale / 1e9, "seconds": round(time.time() - t0, 2),
            "stats": stats[-1] if stats else ""}


def swift_profile(binary, model_dir, tok, data_dir, n_tokens: int, max_tokens: int,
                  rounds: int = 2, held_out: float = 0.05) -> dict:
    real = tok.decode(real_tokens(tok, data_dir, n_tokens, None, held_out).tolist())
    dummy = tok.decode(dummy_tokens(tok, n_tokens).tolist())
    out = {"prompt_tokens": n_tokens, "max_tokens": max_tokens}
    for kind, text in (("real", real), ("dummy", dummy)):
        runs = [swift_rss(binary, model_dir, text, max_tokens) for _ in range(rounds)]
        out[kind] = {"rss_peak_gb": float(np.median([r["rss_peak_gb"] for r in runs])),
                     "runs": runs}
    out["real_minus_dummy_gb"] = out["real"]["rss_peak_gb"] - out["dummy"]["rss_peak_gb"]
    return out


# --- a random checkpoint -----------------------------------------------------------------

def random_model(name: str, seed: int = 0):
    """A random int4 (official QAT layout) model of preset `name`, built in memory: int4
    codes uniform, scales so weights have std ~0.02, norms one, selection biases zero."""
    from mlx.utils import tree_flatten

    from .config import QAT_QUANTIZATION, preset
    from .model import Model

    mx.random.seed(seed)
    model = Model(preset(name, quantization=dict(QAT_QUANTIZATION)))
    new = []
    for k, p in tree_flatten(model.parameters()):
        if p.dtype == mx.uint32:
            p = mx.random.randint(0, 2**31, p.shape).astype(mx.uint32)
        elif k.endswith("scales"):
            p = mx.random.uniform(0.003, 0.006, p.shape).astype(mx.float16)  # weight std ~0.02
        elif k.endswith("biases"):
            continue
        elif k.endswith("norm.weight"):  # as train.stages.init_weights
            p = mx.ones_like(p)
        elif k.endswith("expert_bias"):
            p = mx.zeros_like(p)
        else:
            p = (mx.random.normal(p.shape) * 0.02).astype(p.dtype)
        new.append((k, p))
    model.load_weights(new, strict=False)
    for layer in model.layers:  # symmetric int4: affine bias = -8 * scale
        for m in layer.modules():
            if getattr(m, "biases", None) is not None:
                m.biases = -8 * m.scales
    mx.eval(model.parameters())
    model.eval()
    return model


# --- CLI ---------------------------------------------------------------------------------

def profile(model, tok, contexts=None, decode=32, data_dir=E.DATA_DIR, eos=None,
            rounds=1, util_tokens=4096, held_out=0.05) -> dict:
    contexts = contexts or default_contexts(model.args.max_position_embeddings)
    too_long = [c for c in contexts if c >= model.args.max_position_embeddings]
    if too_long:
        raise E.EvalError(f"contexts {too_long} do not fit the model's "
                          f"{model.args.max_position_embeddings} positions with decoding")
    return {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "device": str(mx.default_device()), "mlx": mx.__version__,
                        "date": time.strftime("%Y-%m-%d")},
            "params": model.args.param_counts(), "decode_tokens": decode,
            "held_out_fraction": held_out,
            "speed_memory": speed_memory(model, tok, contexts, decode, data_dir, eos, rounds,
                                         held_out),
            "utilisation": utilisation(model, tok, data_dir, util_tokens, eos, held_out)}


def main(argv=None) -> int:
    from .checkpoint import load, load_tokenizer, resolve

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    p.add_argument("--random", choices=["S", "M", "L"],
                   help="profile a random int4 preset instead (prompts tokenized with "
                        "--model's tokenizer, whose ids are all < its vocabulary)")
    p.add_argument("--quantize", choices=["rtn", "mse"], help="int4 a float model on load")
    p.add_argument("--contexts", type=int, nargs="+")
    p.add_argument("--decode", type=int, default=32, help="tokens decoded per run")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--data-dir", default=str(E.DATA_DIR))
    p.add_argument("--held-out", type=float, default=0.05,
                   help="prompts come from the last fraction of each corpus (0: all of it)")
    p.add_argument("--util-tokens", type=int, default=4096, help="tokens per domain")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--heatmap", help="write the expert-utilisation heatmap PNG here")
    p.add_argument("--swift", help="the Swift CLI binary, to measure its peak RSS too")
    p.add_argument("--swift-prompt-tokens", type=int, default=256)
    p.add_argument("--swift-max-tokens", type=int, default=4)
    a = p.parse_args(argv)
    folder = resolve(a.model)
    tok = load_tokenizer(folder)
    eos = E.eos_of(tok, folder)
    if a.random:
        model, label = random_model(a.random), f"random int4 MobileMoE-{a.random}"
    else:
        model, _ = load(folder)
        label = str(a.model or "bundled default model")
        if a.quantize:
            from . import qat

            model = qat.ptq(model, a.quantize)
            label += f" (int4 {a.quantize} on load)"
    try:
        res = profile(model, tok, a.contexts, a.decode, a.data_dir, eos, a.rounds,
                      a.util_tokens, a.held_out)
    except E.EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res["model"] = label
    if a.swift:
        target, tmp = folder, None
        if a.random:
            from .checkpoint import save

            tmp = tempfile.TemporaryDirectory()
            target = Path(tmp.name) / "ckpt"
            save(model, tok, target)
        res["swift_cli"] = swift_profile(a.swift, target, tok, a.data_dir,
                                         a.swift_prompt_tokens, a.swift_max_tokens,
                                         held_out=a.held_out)
        if tmp:
            tmp.cleanup()
    if a.heatmap:
        plot_heatmap(res["utilisation"], a.heatmap, f"{label}: expert utilisation per domain")
    print("| context | prompt | prefill tok/s | decode tok/s | MLX peak GB | RSS peak GB | "
          "experts touched |\n|---|---|---|---|---|---|---|")
    for r in res["speed_memory"]:
        print(f"| {r['context']} | {r['prompt']} | {r['prefill_tok_s']:.0f} | "
              f"{r['decode_tok_s']:.1f} | {r['mlx_peak_gb']:.3f} | {r['rss_peak_gb']:.3f} | "
              f"{r['experts']['fraction']:.0%} |")
    if "swift_cli" in res:
        s = res["swift_cli"]
        print(f"Swift CLI peak RSS: real {s['real']['rss_peak_gb']:.3f} GB, dummy "
              f"{s['dummy']['rss_peak_gb']:.3f} GB ({s['prompt_tokens']}-token prompts)")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
