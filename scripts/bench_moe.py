"""Benchmark the fused MoE FFN kernels against mlx-lm's MoE path, in one process.

(a) One MoE FFN layer (routing + k routed experts + shared expert), per layer and token
    count T: ours (the model's MoE module: fused kernels on a GPU), the same module on its
    plain-MLX reference path, and mlx-lm's path (SwitchGLU + gather_qmm, affine 4-bit g32,
    plus the routing ops and a quantized shared MLP). Layers are timed 8 distinct ones per
    evaluation (weights do not stay in cache; launch gaps as in a forward pass).
(b) Whole models, random weights, INT4 g32: our S/M/L against a dense 1B (mlx-lm llama:
    30 layers, hidden 1280, FFN 6144, 20/4 heads, vocab 128256, tied): prompt (512 tokens)
    and decode tokens/s through mlx-lm's generate_step.

    python scripts/bench_moe.py                       # both parts, JSON on stdout
    python scripts/bench_moe.py --part layer --sizes S --tokens 1 4
    python scripts/bench_moe.py --device-report       # also writes docs/bench-<device>.md
On a CPU only the reference paths run (no kernels): use it as a smoke test with --sizes tiny.
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
    args = preset(size, num_hidden_layers=n, vocab_size=256)
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


# --- (b) whole models -----------------------------------------------------------------------

def _gen_speed(model, prompt_len, decode_tokens, repeats):
    from mlx_lm.generate import generate_step
    best = None
    for r in range(repeats + 1):  # the first run warms up (kernel compilation)
        prompt = mx.random.randint(0, 128000, (prompt_len,))
        n = decode_tokens if r else 4
        t0 = time.perf_counter()
        for i, (tok, _) in enumerate(generate_step(prompt, model, max_tokens=n)):
            if i == 0:
                t1 = time.perf_counter()
        t2 = time.perf_counter()
        if r:
            res = dict(prompt_tps=prompt_len / (t1 - t0), decode_tps=(n - 1) / (t2 - t1))
            best = res if best is None or res["decode_tps"] > best["decode_tps"] else best
    return best


def bench_models(sizes, dtype, prompt_len, decode_tokens, repeats):
    rows = []
    dense = llama.Model(llama.ModelArgs(**DENSE_1B))
    dense.set_dtype(dtype)
    nn.quantize(dense, **Q)
    mx.eval(dense.parameters())
    ref = dict(model="dense-1B (mlx-lm llama)", **_gen_speed(dense, prompt_len, decode_tokens, repeats))
    rows.append(ref)
    print(json.dumps(ref), file=sys.stderr, flush=True)
    del dense
    gc.collect()
    mx.clear_cache()
    for size in sizes:
        model = quantize_model(Model(preset(size)))
        model.set_dtype(dtype)
        mx.eval(model.parameters())
        variants = [("fused", None), ("fused, eager decode", "EAGER"), ("reference", "REFERENCE")]
        for variant, switch in variants if gpu_backend() else variants[2:]:
            with (_env(f"MLX_MOBILEMOE_{switch}") if switch else contextlib.nullcontext()):
                r = _gen_speed(model, prompt_len, decode_tokens, repeats)
            row = dict(model=f"MobileMoE-{size}", path=variant, fused=variant != "reference",
                       **r, decode_vs_dense=r["decode_tps"] / ref["decode_tps"],
                       prompt_vs_dense=r["prompt_tps"] / ref["prompt_tps"])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        del model
        gc.collect()
        mx.clear_cache()
    return rows


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
        out += ["## Whole model: prompt (512 tokens) and decode, tokens/s", "",
                "| model | MoE path | prompt tok/s | decode tok/s | prompt vs dense | decode vs dense |",
                "|---|---|---|---|---|---|"]
        for r in res["model"]:
            vs = (f"{r['prompt_vs_dense']:.2f}x | {r['decode_vs_dense']:.2f}x"
                  if "decode_vs_dense" in r else "1 | 1")
            path = r.get("path", "fused" if r.get("fused") else "reference") \
                if "decode_vs_dense" in r else ""
            out.append(f"| {r['model']} | {path} | "
                       f"{r['prompt_tps']:.0f} | {r['decode_tps']:.1f} | {vs} |")
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
    p.add_argument("--part", choices=["layer", "model", "overhead", "all"], default="all")
    p.add_argument("--sizes", nargs="+", default=["S", "M", "L"])
    p.add_argument("--tokens", nargs="+", type=int, default=[1, 4, 512])
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--layers", type=int, default=8, help="distinct layers per timed evaluation")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--decode", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
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
    if a.part in ("model", "all"):
        res["model"] = bench_models([s for s in a.sizes if s != "tiny"], dtype, a.prompt,
                                    a.decode, a.repeats)
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
