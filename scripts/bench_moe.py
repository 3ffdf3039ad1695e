"""Benchmark the fused MoE FFN kernels against mlx-lm's MoE path, in one process.

(a) One MoE FFN layer (routing + k routed experts + shared expert), per layer and token
    count T: ours (the model's MoE module: fused kernels on a GPU), the same module on its
    plain-MLX reference path, and mlx-lm's path (SwitchGLU + gather_qmm, affine 4-bit g32,
    plus the routing ops and a quantized shared MLP). Layers are timed 8 distinct ones per
    evaluation (weights do not stay in cache; launch gaps as in a forward pass).
(b) Whole models, the user's path: random INT4 g32 checkpoints of S/M/L written in the
    released layout and opened with `load()`, then mlx-lm's `generate_step` (prefill 512 and
    2048 tokens, decode 128), against the dense 1B (mlx-lm llama shaped like MobileLLM-Pro:
    30 layers, hidden 1280, FFN 6144, 20/4 heads, vocab 128256, tied) and mlx-lm's own MoE
    path shaped like S (glm4_moe), all built first, then interleaved rounds.
(c) Training step (batch 4 x 1024, bf16, AdamW, compiled): dense 1B vs S, dropless and
    drop-and-pad.

    python scripts/bench_moe.py --out bench.json --device-report   # (a), (b), (c)
    python scripts/bench_moe.py --part model --sizes S M L
    python scripts/bench_moe.py --part layer --sizes S --tokens 1 4
    python scripts/bench_moe.py --part train
On a CPU only the reference paths run (no kernels): `--sizes tiny` (layer) and `--smoke`
(model, train) test the harness; their numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_lm.models import llama  # noqa: E402
from mlx_lm.models.switch_layers import SwitchGLU  # noqa: E402

from mlx_mobilemoe import Model, preset  # noqa: E402
from mlx_mobilemoe.kernels import gpu_backend  # noqa: E402
from mlx_mobilemoe.model import quantize_model  # noqa: E402
from mlx_mobilemoe.moe import route  # noqa: E402

DENSE_1B = dict(model_type="llama", hidden_size=1280, num_hidden_layers=30,
                intermediate_size=6144, num_attention_heads=20, num_key_value_heads=4,
                head_dim=64, rms_norm_eps=1e-5, vocab_size=128256, tie_word_embeddings=True,
                rope_theta=500000.0)
Q = dict(group_size=32, bits=4)
# --smoke: the same harness on models small enough for a CPU test
SMOKE = dict(num_hidden_layers=2, vocab_size=4096)  # the bundled tokenizer: 4096 ids
SMOKE_DENSE = dict(DENSE_1B, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=4096)


def device_name() -> str:
    if gpu_backend() == "cuda" or (hasattr(mx, "cuda") and mx.cuda.is_available()):
        try:
            return subprocess.check_output(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                           text=True).splitlines()[0].strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return mx.device_info().get("device_name", "unknown")


# --- (a) one MoE FFN layer ----------------------------------------------------------------

class MlxLmMoE(nn.Module):
    """mlx-lm's MoE path for the same layer: routing ops, SwitchGLU (gather_qmm), shared MLP."""

    def __init__(self, H, I, S, E, k):
        super().__init__()
        self.k = k
        self.router = nn.Linear(H, E, bias=False)
        self.expert_bias = mx.zeros((E,))
        self.switch_mlp = SwitchGLU(H, I, E)
        self.shared = [nn.Linear(H, S, bias=False), nn.Linear(H, S, bias=False),
                       nn.Linear(S, H, bias=False)]

    def __call__(self, x):
        idx, w = route(self.router(x.astype(mx.float32)), self.expert_bias, self.k, 1.0, True)
        y = (self.switch_mlp(x, idx) * w[..., None]).sum(axis=-2).astype(x.dtype)
        g, u, d = self.shared
        return y + d(nn.silu(g(x)) * u(x))


def _ours_layers(size, n, dtype):
    args = preset(size, num_hidden_layers=n, vocab_size=256, bos_token_id=0, eos_token_id=1)
    model = quantize_model(Model(args))
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return [l.feed_forward for l in model.layers], args


def _mlxlm_layers(args, n, dtype):
    H, I, S, E = (args.hidden_size, args.intermediate_size, args.intermediate_size_mlp,
                  args.num_local_experts)
    layers = []
    for _ in range(n):
        m = MlxLmMoE(H, I, S, E, args.num_experts_per_tok)
        m.set_dtype(dtype)
        m.router.weight = m.router.weight.astype(mx.float32)
        nn.quantize(m, class_predicate=lambda p, mod: p != "router" and hasattr(mod, "to_quantized"),
                    **Q)
        mx.eval(m.parameters())
        layers.append(m)
    return layers


@contextlib.contextmanager
def _env(name):
    """Set the switch `name`=1 for the block (MLX_MOBILEMOE_REFERENCE / _EAGER)."""
    os.environ[name] = "1"
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _time(fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _time_layers(layers, xs, iters):
    return _time(lambda: mx.eval([m(x) for m, x in zip(layers, xs)]), iters) / len(layers)


def active_bytes(args) -> int:
    """Bytes one token must stream through one MoE layer at 4.5 bits per weight."""
    H, I, S, E, k = (args.hidden_size, args.intermediate_size, args.intermediate_size_mlp,
                     args.num_local_experts, args.num_experts_per_tok)
    return int((k * 3 * H * I + 3 * H * S) * 4.5 / 8 + 4 * E * H)


def bench_layer(sizes, tokens, dtype, n_layers, iters):
    rows = []
    for size in sizes:
        ours, args = _ours_layers(size, n_layers, dtype)
        base = _mlxlm_layers(args, n_layers, dtype)
        for T in tokens:
            xs = [mx.random.normal((1, T, args.hidden_size)).astype(dtype) for _ in ours]
            mx.eval(xs)
            it = iters if T < 64 else max(iters // 5, 3)
            t_ours = _time_layers(ours, xs, it)
            with _env("MLX_MOBILEMOE_EAGER"):
                t_eager = _time_layers(ours, xs, it)
            with _env("MLX_MOBILEMOE_REFERENCE"):
                t_ref = _time_layers(ours, xs, it)
            t_base = _time_layers(base, xs, it)
            row = dict(size=size, tokens=T, k=args.num_experts_per_tok,
                       ours_us=t_ours * 1e6, ours_eager_us=t_eager * 1e6,
                       reference_us=t_ref * 1e6, mlx_lm_us=t_base * 1e6,
                       speedup_vs_mlx_lm=t_base / t_ours, kernels=gpu_backend() is not None)
            if T == 1:
                row["active_MB"] = active_bytes(args) / 1e6
                row["ours_GBps"] = active_bytes(args) / t_ours / 1e9
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        del ours, base
        gc.collect()
        mx.clear_cache()
    return rows


def bench_overhead(sizes, dtype, n_layers, iters):
    """Where the decode time of one layer goes: building the lazy graph in Python (`build`)
    versus evaluating it (`eval`: encoding and GPU), per path, T = 1."""
    rows = []
    for size in sizes:
        ours, args = _ours_layers(size, n_layers, dtype)
        base = _mlxlm_layers(args, n_layers, dtype)
        xs = [mx.random.normal((1, 1, args.hidden_size)).astype(dtype) for _ in ours]
        mx.eval(xs)
        for name, layers, switch in (("ours", ours, None), ("ours (eager)", ours, "EAGER"),
                                     ("reference", ours, "REFERENCE"), ("mlx_lm", base, None)):
            with (_env(f"MLX_MOBILEMOE_{switch}") if switch else contextlib.nullcontext()):
                t_build = _time(lambda: [m(x) for m, x in zip(layers, xs)], iters) / n_layers
                t_all = _time_layers(layers, xs, iters)
            rows.append(dict(size=size, path=name, build_us=t_build * 1e6,
                             eval_us=(t_all - t_build) * 1e6, total_us=t_all * 1e6))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        rows += _host_probe(size, ours[0], xs[0], args.num_experts_per_tok)
        del ours, base
        gc.collect()
        mx.clear_cache()
    return rows


def _host_probe(size, moe, x, k):
    """Graph-building cost of one call of each piece (no evaluation), in µs."""
    from mlx_mobilemoe.kernels import moe as moe_mod
    backend = gpu_backend()
    probes = {"module (MoE block + custom_function)": lambda: moe(x),
              "one add": lambda: x + 1}
    if backend:
        w = moe.kernel_weights()
        probes["kernels only (two launches)"] = lambda: moe_mod.run(x, w, k, backend)
        make = mx.fast.cuda_kernel if backend == "cuda" else mx.fast.metal_kernel
        tiny = make(name="probe", input_names=["a"], output_names=["b"], source="b[0] = a[0];")
        probes["one trivial custom kernel"] = lambda: tiny(
            inputs=[x], output_shapes=[(1,)], output_dtypes=[x.dtype], grid=(32, 1, 1),
            threadgroup=(32, 1, 1), template=[("T", x.dtype)])
    rows = []
    for name, fn in probes.items():
        t = _time(lambda: [fn() for _ in range(100)], 5, warmup=1) / 100
        rows.append(dict(size=size, path=name, build_us=t * 1e6))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


# --- (b) whole models, the user's path ------------------------------------------------------

def glm4_moe_args(size: str, overrides: dict):
    """mlx-lm's own MoE model (glm4_moe: SwitchGLU + gather_qmm, sigmoid routing) shaped like
    our `size`: the shared expert as n_shared_experts = S // I experts of width I."""
    from mlx_lm.models import glm4_moe
    a = preset(size, **overrides)
    return glm4_moe.ModelArgs(
        model_type="glm4_moe", vocab_size=a.vocab_size, hidden_size=a.hidden_size,
        intermediate_size=a.intermediate_size_mlp, max_position_embeddings=131072,
        moe_intermediate_size=a.intermediate_size, norm_topk_prob=True,
        num_attention_heads=a.num_attention_heads, n_group=1, head_dim=a.head_dim,
        topk_group=1, n_shared_experts=a.intermediate_size_mlp // a.intermediate_size,
        n_routed_experts=a.num_local_experts, routed_scaling_factor=a.routed_scaling_factor,
        num_experts_per_tok=a.num_experts_per_tok, first_k_dense_replace=0,
        num_hidden_layers=a.num_hidden_layers, num_key_value_heads=a.num_key_value_heads,
        rms_norm_eps=a.rms_norm_eps, rope_theta=a.rope_theta, rope_scaling=None,
        use_qk_norm=True, tie_word_embeddings=True, attention_bias=False,
        partial_rotary_factor=1.0)


def _mlxlm_int4(model, dtype):
    model.set_dtype(dtype)
    nn.quantize(model, class_predicate=lambda p, m: hasattr(m, "to_quantized")
                and not p.endswith(".gate"), **Q)
    mx.eval(model.parameters())
    return model


def _write_checkpoint(size: str, folder: Path, overrides: dict) -> Path:
    """A random INT4 checkpoint of `size` in the released layout (config, safetensors in the
    official names, the bundled model's tokenizer)."""
    from mlx_mobilemoe import checkpoint
    model = quantize_model(Model(preset(size, **overrides)))
    tok = checkpoint.load_tokenizer(checkpoint.resolve(None))
    path = checkpoint.save(model, tok, folder / f"random-int4-{size}")
    del model
    gc.collect()
    mx.clear_cache()
    return path


def _generate(model, prompt_len, decode_tokens, vocab):
    """(prompt tok/s, decode tok/s) of one mlx-lm generate_step run: prompt tokens over the
    time to the first token, tokens after the first over their time."""
    from mlx_lm.generate import generate_step
    prompt = mx.random.randint(0, vocab, (prompt_len,))
    mx.eval(prompt)
    t0 = time.perf_counter()
    t1 = None
    for i, _ in enumerate(generate_step(prompt, model, max_tokens=decode_tokens)):
        if i == 0:
            t1 = time.perf_counter()
    t2 = time.perf_counter()
    dec = (decode_tokens - 1) / (t2 - t1) if decode_tokens > 1 else None
    return prompt_len / (t1 - t0), dec


def _contenders(sizes, dtype, folder, overrides, dense_cfg):
    """(name, model, env, vocab) in table order: the dense 1B, mlx-lm's MoE path (S-shaped),
    ours (each size: the default path; the first also with the opt-in compiled decode step
    and with the plain-MLX reference), then the bundled default model made int4 (as
    `generate --quantize` does) on the default path and on the plain-MLX reference (the
    dispatcher's "never slower" check)."""
    from mlx_lm.models import glm4_moe
    from mlx_mobilemoe import load
    V = dense_cfg["vocab_size"]
    out = [("dense 1B (mlx-lm llama)", _mlxlm_int4(llama.Model(llama.ModelArgs(**dense_cfg)), dtype), {}, V)]
    moe_sizes = [s for s in sizes if s != "tiny"] or sizes
    glm = glm4_moe.Model(glm4_moe_args(moe_sizes[0], overrides))
    out.append((f"mlx-lm MoE path, {moe_sizes[0]}-shaped (glm4_moe)", _mlxlm_int4(glm, dtype), {}, V))
    for size in moe_sizes:
        model, _ = load(_write_checkpoint(size, folder, overrides), dtype=dtype)
        out.append((f"ours {size}", model, {}, V))
        if size == moe_sizes[0]:
            out.append((f"ours {size}, compiled decode step", model, {"MLX_MOBILEMOE_STEP": "1"}, V))
            out.append((f"ours {size}, plain MLX", model, {"MLX_MOBILEMOE_REFERENCE": "1"}, V))
    bundled = quantize_model(load(None, dtype=mx.float32)[0])
    bundled.set_dtype(dtype)
    mx.eval(bundled.parameters())
    Vb = bundled.args.vocab_size
    out.append(("bundled default model, int4 (default path)", bundled, {}, Vb))
    out.append(("bundled default model, int4, plain MLX", bundled, {"MLX_MOBILEMOE_REFERENCE": "1"}, Vb))
    return out


def bench_models(sizes, dtype, prompts, decode_tokens, rounds, overrides=None,
                 dense_cfg=None, folder=None):
    """Whole-model prefill (each of `prompts`) and decode (after the first prompt), every
    contender once per round, rounds interleaved; medians and ranges over the rounds."""
    import tempfile
    overrides = overrides or {}
    dense_cfg = dense_cfg or DENSE_1B
    with tempfile.TemporaryDirectory() as tmp:
        cont = _contenders(sizes, dtype, Path(folder or tmp), overrides, dense_cfg)
        runs = {name: {f"prefill_{p}": [] for p in prompts} | {"decode": []} for name, *_ in cont}
        for r in range(rounds + 1):  # round 0 warms up with the timed shapes
            for name, model, env, vocab in cont:
                with _envs(env):
                    for i, p in enumerate(prompts):
                        pt, dt = _generate(model, p, decode_tokens if i == 0 else 2, vocab)
                        if r:
                            runs[name][f"prefill_{p}"].append(pt)
                            if i == 0:
                                runs[name]["decode"].append(dt)
                print(json.dumps(dict(round=r, model=name, **{k: v[-1] if v and r else None
                                                               for k, v in runs[name].items()})),
                      file=sys.stderr, flush=True)
    rows = []
    base = None
    for name, _, env, _ in cont:
        row = dict(model=name, env=env)
        for k, v in runs[name].items():
            row[k] = statistics.median(v)
            row[k + "_range"] = [min(v), max(v)]
        base = base or row
        for k in runs[name]:
            row[k + "_vs_dense"] = row[k] / base[k]
        rows.append(row)
    return rows


@contextlib.contextmanager
def _envs(env: dict):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- (c) training step ------------------------------------------------------------------------

def _train_tps(model, loss_fn, batch, seq, vocab, steps):
    """Tokens/s of a compiled value_and_grad + AdamW step (model and optimizer state as the
    compiled function's inputs and outputs), median over `steps` after 3 warm-up steps."""
    import mlx.optimizers as optim
    from functools import partial
    opt = optim.AdamW(learning_rate=1e-4)
    state = [model.state, opt.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x, y):
        loss, g = nn.value_and_grad(model, loss_fn)(model, x, y)
        opt.update(model, g)
        return loss

    x = mx.random.randint(0, vocab, (batch, seq))
    y = mx.random.randint(0, vocab, (batch, seq))
    ts = []
    for i in range(3 + steps):
        t0 = time.perf_counter()
        mx.eval(step(x, y), state)
        if i >= 3:
            ts.append(time.perf_counter() - t0)
    return batch * seq / statistics.median(ts), [batch * seq / max(ts), batch * seq / min(ts)]


def _ce(logits, y):
    return nn.losses.cross_entropy(logits.astype(mx.float32), y).mean()


def bench_train(size, batch, seq, steps, overrides=None, dense_cfg=None, dtype=mx.bfloat16):
    """Training step tok/s: the dense 1B against ours (float weights in `dtype`), dropless
    and drop-and-pad dispatch. One model at a time (memory), same harness."""
    from mlx_mobilemoe.moe import MoEOptions
    dense_cfg = dense_cfg or DENSE_1B
    vocab = dense_cfg["vocab_size"]
    rows = []
    d = llama.Model(llama.ModelArgs(**dense_cfg))
    d.set_dtype(dtype)
    mx.eval(d.parameters())
    tps, rng = _train_tps(d, lambda m, x, y: _ce(m(x), y), batch, seq, vocab, steps)
    rows.append(dict(model="dense 1B (mlx-lm llama)", tok_s=tps, range=rng))
    del d
    gc.collect()
    mx.clear_cache()
    for dispatch in ("dropless", "drop"):
        m = Model(preset(size, **(overrides or {})))
        m.set_dtype(dtype)
        mx.eval(m.parameters())
        opts = MoEOptions(dispatch=dispatch)
        tps, rng = _train_tps(m, lambda m, x, y: _ce(m(x, moe=opts), y), batch, seq, vocab,
                              steps)
        rows.append(dict(model=f"ours {size}, {dispatch}", tok_s=tps, range=rng,
                         vs_dense=tps / rows[0]["tok_s"]))
        del m
        gc.collect()
        mx.clear_cache()
    for r in rows:
        print(json.dumps(r), file=sys.stderr, flush=True)
    return dict(batch=batch, seq=seq, dtype=str(dtype), rows=rows)


# --- report ---------------------------------------------------------------------------------

def markdown(res) -> str:
    out = [f"# Fused MoE kernels: measured on {res['device']}", "",
           f"{res['date']}, MLX {res['mlx']}, mlx-lm {res['mlx_lm']}, activations {res['dtype']}, "
           f"random weights, INT4 g32. Produced by `python scripts/bench_moe.py --device-report`.",
           ""]
    if res.get("layer"):
        out += ["## One MoE FFN layer (routing + k routed experts + shared expert)", "",
                "`ours`: the fused kernels, decode replaying an `mx.compile`d graph; `eager`: the "
                "same kernels with the graph built op by op (`MLX_MOBILEMOE_EAGER=1`).", "",
                "| size | T | ours µs | eager µs | mlx-lm µs | ours vs mlx-lm | reference µs | ours GB/s (T=1) |",
                "|---|---|---|---|---|---|---|---|"]
        for r in res["layer"]:
            gbs = f"{r['ours_GBps']:.0f}" if "ours_GBps" in r else ""
            eager = f"{r['ours_eager_us']:.1f}" if "ours_eager_us" in r else ""
            out.append(f"| {r['size']} | {r['tokens']} | {r['ours_us']:.1f} | {eager} | "
                       f"{r['mlx_lm_us']:.1f} | {r['speedup_vs_mlx_lm']:.2f}x | "
                       f"{r['reference_us']:.1f} | {gbs} |")
        out.append("")
    if res.get("model"):
        rows = res["model"]
        ks = [k for k in rows[0] if k.startswith("prefill_") and not k.endswith(("_range", "_vs_dense"))]
        out += [f"## Whole model, the user's path: `load()` + mlx-lm `generate_step`", "",
                f"Random INT4 g32 checkpoints written in the released layout; tokens/s, median of "
                f"{res.get('rounds', '?')} interleaved rounds (range in brackets); decode = "
                f"{res.get('decode_tokens', '?')} tokens after a {ks[0][8:]}-token prompt.", "",
                "| model | " + " | ".join(f"prefill {k[8:]} tok/s" for k in ks) +
                " | decode tok/s | " + " | ".join(f"prefill {k[8:]} vs dense" for k in ks) +
                " | decode vs dense |", "|---|" + "---|" * (2 * len(ks) + 2)]
        for r in rows:
            cells = [f"{r[k]:,.0f} [{r[k + '_range'][0]:,.0f}–{r[k + '_range'][1]:,.0f}]"
                     for k in ks]
            cells.append(f"{r['decode']:,.1f} [{r['decode_range'][0]:,.1f}–"
                         f"{r['decode_range'][1]:,.1f}]")
            cells += [f"{r[k + '_vs_dense']:.2f}x" for k in ks] + [f"{r['decode_vs_dense']:.2f}x"]
            out.append(f"| {r['model']} | " + " | ".join(cells) + " |")
        out.append("")
    if res.get("train"):
        t = res["train"]
        out += [f"## Training step: batch {t['batch']} x {t['seq']}, {t['dtype']}, AdamW, "
                "compiled (value_and_grad + update)", "",
                "| model | tok/s (median) | range | vs dense |", "|---|---|---|---|"]
        for r in t["rows"]:
            vs = f"{r['vs_dense']:.2f}x" if "vs_dense" in r else "1"
            out.append(f"| {r['model']} | {r['tok_s']:,.0f} | {r['range'][0]:,.0f}–"
                       f"{r['range'][1]:,.0f} | {vs} |")
        out.append("")
    if res.get("overhead"):
        out += ["## Where one decode layer's time goes (T = 1)", "",
                "`build`: building the lazy graph in Python (host); `eval`: the rest of the "
                "evaluation (encoding and GPU), per layer.", "",
                "| size | path | build µs | eval µs | total µs |", "|---|---|---|---|---|"]
        for r in res["overhead"]:
            ev = f"{r['eval_us']:.1f} | {r['total_us']:.1f}" if "eval_us" in r else " | "
            out.append(f"| {r['size']} | {r['path']} | {r['build_us']:.1f} | {ev} |")
        out.append("")
    if res.get("note"):
        out += [f"Note: {res['note']}.", ""]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["layer", "model", "train", "overhead", "all"],
                   default="all", help="all = layer, model and train")
    p.add_argument("--sizes", nargs="+", default=["S", "M", "L"])
    p.add_argument("--tokens", nargs="+", type=int, default=[1, 4, 512])
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--layers", type=int, default=8, help="distinct layers per timed evaluation")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--prompts", nargs="+", type=int, default=[512, 2048])
    p.add_argument("--decode", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (after a warm-up)")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--train-seq", type=int, default=1024)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--smoke", action="store_true",
                   help="tiny models everywhere (CPU test of the harness, numbers meaningless)")
    p.add_argument("--device-report", action="store_true")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--from-json", help="only write the --device-report of a saved JSON")
    a = p.parse_args(argv)
    if a.from_json:
        res = json.loads(Path(a.from_json).read_text())
        write_report(res)
        return
    import mlx_lm
    dtype = getattr(mx, a.dtype)
    mx.random.seed(0)
    res = dict(device=device_name(), backend=gpu_backend() or "reference (no GPU kernels)",
               mlx=mx.__version__, mlx_lm=mlx_lm.__version__, dtype=a.dtype,
               date=datetime.date.today().isoformat())
    if a.part in ("layer", "all"):
        res["layer"] = bench_layer(a.sizes, a.tokens, dtype, a.layers, a.iters)
    if a.part == "overhead":
        res["overhead"] = bench_overhead(a.sizes, dtype, a.layers, a.iters)
    over, dense = ({}, DENSE_1B) if not a.smoke else (SMOKE, SMOKE_DENSE)
    if a.part in ("model", "all"):
        res.update(rounds=a.rounds, decode_tokens=a.decode)
        res["model"] = bench_models(a.sizes, dtype, a.prompts, a.decode, a.rounds, over, dense)
    if a.part in ("train", "all"):
        res["train"] = bench_train(a.sizes[0], a.train_batch, a.train_seq, a.train_steps, over,
                                   dense, mx.float32 if a.smoke else mx.bfloat16)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    if a.device_report:
        write_report(res)


def write_report(res) -> None:
    slug = re.sub(r"[^a-z0-9]+", "-", res["device"].lower()).strip("-")
    path = Path(__file__).resolve().parents[1] / "docs" / f"bench-{slug}.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text(markdown(res))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
