"""Issue 13, first GPU run: measure the baseline and candidate levers in one process.

Not a user-facing benchmark (that is bench_moe.py): it explains where time goes.
    python scripts/explore_levers.py --out levers.json
Its one run so far: docs/gpu-logs/levers-h200.json (H200, 2026-12-01). In that run the
compiled decode step was still on by default, so the names with "+step" ran it and "S fused"
ran without it (MLX_MOBILEMOE_STEP=0); it is opt-in now (MLX_MOBILEMOE_STEP=1).
Parts: (gen) whole-model prefill/decode through mlx-lm's generate_step, interleaved rounds:
dense 1B, mlx-lm's MoE path (glm4_moe S-shaped), ours S/M/L with and without the compiled
decode step, the dense 1B with the same compiled step (the trick is model-agnostic);
(prefill) per-layer pieces of S at T = 512/2048; (train) training step and its pieces.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_moe  # noqa: E402  (its timer: one way to time a call)

from mlx_lm.generate import generate_step  # noqa: E402
from mlx_lm.models import glm4_moe, llama  # noqa: E402
from mlx_lm.models.cache import KVCache  # noqa: E402

from mlx_mobilemoe import Model, decode_step, preset  # noqa: E402
from mlx_mobilemoe.kernels import _build  # noqa: E402
from mlx_mobilemoe.model import quantize_model  # noqa: E402

Q = dict(group_size=32, bits=4)
DENSE_1B = dict(model_type="llama", hidden_size=1280, num_hidden_layers=30,
                intermediate_size=6144, num_attention_heads=20, num_key_value_heads=4,
                head_dim=64, rms_norm_eps=1e-5, vocab_size=128256, tie_word_embeddings=True,
                rope_theta=500000.0)
LOG = []


def log(**kw):
    LOG.append(kw)
    print(json.dumps(kw), flush=True)


def glm_args(size):
    a = preset(size)
    return glm4_moe.ModelArgs(
        model_type="glm4_moe", vocab_size=a.vocab_size, hidden_size=a.hidden_size,
        intermediate_size=a.intermediate_size_mlp, max_position_embeddings=131072,
        moe_intermediate_size=a.intermediate_size, norm_topk_prob=True,
        num_attention_heads=a.num_attention_heads, n_group=1, head_dim=a.head_dim, topk_group=1,
        n_shared_experts=a.intermediate_size_mlp // a.intermediate_size,
        n_routed_experts=a.num_local_experts, routed_scaling_factor=1.0,
        num_experts_per_tok=a.num_experts_per_tok, first_k_dense_replace=0,
        num_hidden_layers=a.num_hidden_layers, num_key_value_heads=a.num_key_value_heads,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=None, use_qk_norm=True,
        tie_word_embeddings=True, attention_bias=False, partial_rotary_factor=1.0)


class StepWrapped(nn.Module):
    """Any mlx-lm model with the compiled decode step (decode_step.py) around it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.compute_dtype = None

    def forward(self, inputs, cache=None, input_embeddings=None):
        return self.inner(inputs, cache=cache)

    def structure_key(self):
        return ("wrapped",)

    @property
    def layers(self):
        return self.inner.layers

    def make_cache(self):
        return [KVCache() for _ in self.layers]

    def __call__(self, inputs, cache=None, input_embeddings=None):
        if decode_step.applies(inputs, cache, input_embeddings):
            return decode_step.decode_step(self, inputs, cache)
        return self.forward(inputs, cache)


def build(dtype):
    out = {}
    d = llama.Model(llama.ModelArgs(**DENSE_1B))
    d.set_dtype(dtype)
    nn.quantize(d, **Q)
    mx.eval(d.parameters())
    out["dense"] = d
    out["dense+step"] = StepWrapped(d)
    g = glm4_moe.Model(glm_args("S"))
    g.set_dtype(dtype)
    nn.quantize(g, class_predicate=lambda p, m: hasattr(m, "to_quantized") and
                not p.endswith("gate"), **Q)
    mx.eval(g.parameters())
    out["mlx-lm glm4_moe S"] = g
    for s in ("S", "M", "L"):
        m = quantize_model(Model(preset(s)))
        m.set_dtype(dtype)
        mx.eval(m.parameters())
        out[s] = m
    return out


def gen(model, prompt_len, n, env):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        prompt = mx.random.randint(0, 128000, (prompt_len,))
        mx.eval(prompt)
        t0 = time.perf_counter()
        t1 = None
        for i, (tok, _) in enumerate(generate_step(prompt, model, max_tokens=n)):
            if i == 0:
                t1 = time.perf_counter()
        t2 = time.perf_counter()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return prompt_len / (t1 - t0), (n - 1) / (t2 - t1) if n > 1 else None


def part_gen(models, rounds):
    contenders = [("dense", "dense", {}), ("dense+step", "dense+step", {"MLX_MOBILEMOE_STEP": "1"}),
                  ("mlx-lm glm4_moe S", "mlx-lm glm4_moe S", {})]
    for s in ("S", "M", "L"):
        contenders.append((f"{s} fused+step", s, {"MLX_MOBILEMOE_STEP": "1"}))
    contenders.append(("S fused", "S", {"MLX_MOBILEMOE_STEP": "0"}))
    contenders.append(("S reference+step", "S", {"MLX_MOBILEMOE_REFERENCE": "1",
                                                  "MLX_MOBILEMOE_STEP": "1"}))
    res = {c[0]: dict(p512=[], p2048=[], dec=[]) for c in contenders}
    for r in range(rounds + 1):
        for name, key, env in contenders:
            p512, dec = gen(models[key], 512, 128, env)
            p2048, _ = gen(models[key], 2048, 2, env)
            if r:
                res[name]["p512"].append(p512)
                res[name]["p2048"].append(p2048)
                res[name]["dec"].append(dec)
            log(part="gen", round=r, name=name, p512=p512, p2048=p2048, dec=dec)
    summary = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in res.items()}
    log(part="gen-summary", **summary)
    return summary


def _time(fn, iters=10, warmup=3):
    return bench_moe._time(fn, iters, warmup)


def one_mma_variant(on: bool):
    """Rebuild the CUDA kernels with one TF32 product instead of three (exploration)."""
    src = _build.read_source.__wrapped__ if hasattr(_build.read_source, "__wrapped__") \
        else _build.read_source

    def read(name):
        t = src(name)
        if on and name == "mm_cuda.h":
            t = t.replace("  mma_sync(acc.c, a_lo, b_hi, acc.c);\n", "").replace(
                "  mma_sync(acc.c, a_hi, b_lo, acc.c);\n", "")
        return t
    read.__wrapped__ = src
    _build.read_source = read
    _build._CACHE.clear()
    for l in MODELS["S"].layers:  # drop memos holding built functions
        l.feed_forward._memo = None


def part_prefill(models, dtype):
    m = models["S"]
    layers = m.layers[:8]
    out = {}
    for T in (512, 2048):
        xs = [mx.random.normal((1, T, m.args.hidden_size)).astype(dtype) for _ in layers]
        mx.eval(xs)

        def attn():
            mx.eval([l.self_attn(l.input_layernorm(x), "causal", KVCache())
                     for l, x in zip(layers, xs)])

        def moe():
            mx.eval([l.feed_forward(l.post_attention_layernorm(x)) for l, x in zip(layers, xs)])

        def layer():
            mx.eval([l(x, "causal", KVCache()) for l, x in zip(layers, xs)])

        def shared():
            mx.eval([l.feed_forward.shared_expert(x) for l, x in zip(layers, xs)])

        def qkv():
            mx.eval([[l.self_attn.q_proj(x), l.self_attn.k_proj(x), l.self_attn.v_proj(x)]
                     for l, x in zip(layers, xs)])

        def sdpa():
            qs = [mx.random.normal((1, m.args.num_attention_heads, T, m.args.head_dim)).astype(dtype) for _ in layers]
            ks = [mx.random.normal((1, m.args.num_key_value_heads, T, m.args.head_dim)).astype(dtype) for _ in layers]
            mx.eval(qs, ks)
            return lambda: mx.eval([mx.fast.scaled_dot_product_attention(
                q, k, k, scale=0.125, mask="causal") for q, k in zip(qs, ks)])

        r = dict(T=T, attn_us=_time(attn) / 8 * 1e6, moe_fused_us=_time(moe) / 8 * 1e6,
                 layer_us=_time(layer) / 8 * 1e6, shared_us=_time(shared) / 8 * 1e6,
                 qkv_us=_time(qkv) / 8 * 1e6, sdpa_us=_time(sdpa()) / 8 * 1e6)
        os.environ["MLX_MOBILEMOE_REFERENCE"] = "1"
        r["moe_reference_us"] = _time(moe) / 8 * 1e6
        os.environ.pop("MLX_MOBILEMOE_REFERENCE")
        one_mma_variant(True)
        r["moe_fused_1xtf32_us"] = _time(moe) / 8 * 1e6
        one_mma_variant(False)
        r["moe_fused_again_us"] = _time(moe) / 8 * 1e6
        # the whole model forward (prefill of T tokens, no logits), and the head
        toks = mx.random.randint(0, 128000, (1, T))

        def whole():
            c = m.make_cache()
            m(toks, cache=c)
            mx.eval([x.state[:2] for x in c])
        r["whole_ms"] = _time(whole, iters=5) * 1e3
        h = mx.random.normal((1, 1, m.args.hidden_size)).astype(dtype)
        r["head_1tok_us"] = _time(lambda: mx.eval(m.model.embed_tokens.as_linear(h))) * 1e6
        log(part="prefill", **r)
        out[T] = r
    return out


def part_train(dtype, steps):
    from mlx_mobilemoe.moe import MoEOptions

    ce = bench_moe._ce

    B, T = 4, 1024
    y = mx.random.randint(0, 128000, (B, T))
    res = {}

    def bench_model(name, model, loss_fn):  # bench_moe's compiled AdamW step, timed alike
        tps, _ = bench_moe._train_tps(model, loss_fn, B, T, 128000, steps)
        res[name] = dict(step_ms=B * T / tps * 1e3, tok_s=tps)
        log(part="train", name=name, **res[name])

    d = llama.Model(llama.ModelArgs(**DENSE_1B))
    d.set_dtype(dtype)
    mx.eval(d.parameters())
    bench_model("dense", d, lambda m, x, y: ce(m(x), y))
    del d
    gc.collect()
    s = Model(preset("S"))
    s.set_dtype(dtype)
    mx.eval(s.parameters())
    for disp in ("dropless", "drop"):
        bench_model(f"S {disp}", s, lambda m, x, y, disp=disp: ce(
            m(x, moe=MoEOptions(dispatch=disp)), y))
    # pieces: fwd+bwd of the head+loss, one attention block, one MoE block (x 20 layers)
    h = mx.random.normal((B, T, s.args.hidden_size)).astype(dtype)
    emb = s.model.embed_tokens

    def on(mod, p, fn):
        mod.update(p)
        return fn()

    def gt(f, params):
        g = mx.grad(f)
        return _time(lambda: mx.eval(g(params)), iters=5) * 1e3
    L = s.layers[0]
    pieces = dict(
        head_loss_ms=gt(lambda w: ce(h @ w.T, y), emb.weight),
        attn_block_ms=gt(lambda p: on(L.self_attn, p, lambda: L.self_attn(h, "causal")).astype(
            mx.float32).sum(),
                         L.self_attn.parameters()),
        moe_dropless_ms=gt(lambda p: on(L.feed_forward, p, lambda: L.feed_forward(
            h, MoEOptions(dispatch="dropless"))).astype(mx.float32).sum(),
            L.feed_forward.trainable_parameters()),
        moe_drop_ms=gt(lambda p: on(L.feed_forward, p, lambda: L.feed_forward(
            h, MoEOptions(dispatch="drop"))).astype(mx.float32).sum(),
            L.feed_forward.trainable_parameters()),
    )
    dl = llama.Model(llama.ModelArgs(**DENSE_1B)).layers[0]
    dl.set_dtype(dtype)
    hd = mx.random.normal((B, T, DENSE_1B["hidden_size"])).astype(dtype)
    pieces["dense_layer_ms"] = gt(lambda p: on(dl, p, lambda: dl(hd, "causal")).astype(
        mx.float32).sum(), dl.parameters())
    pieces["dense_head_loss_ms"] = gt(lambda w: ce(hd @ w.T, y),
                                      mx.random.normal((128256, DENSE_1B["hidden_size"])).astype(dtype))
    log(part="train-pieces", **pieces)
    res["pieces"] = pieces
    return res


MODELS = {}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--parts", nargs="+", default=["gen", "prefill", "train"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default="levers.json")
    a = p.parse_args()
    dtype = mx.float16
    mx.random.seed(0)
    out = dict(mlx=mx.__version__, date=time.strftime("%Y-%m-%d %H:%M"))
    if "gen" in a.parts or "prefill" in a.parts:
        t0 = time.perf_counter()
        MODELS.update(build(dtype))
        log(part="build", s=time.perf_counter() - t0)
    def guarded(name, fn):
        try:
            out[name] = fn()
        except Exception:  # an exploration: keep the other parts' numbers
            import traceback
            traceback.print_exc()
            out[name] = "failed"
        out["log"] = LOG
        Path(a.out).write_text(json.dumps(out, indent=1))
    if "prefill" in a.parts:
        guarded("prefill", lambda: part_prefill(MODELS, dtype))
    if "gen" in a.parts:
        guarded("gen", lambda: part_gen(MODELS, a.rounds))
    MODELS.clear()
    gc.collect()
    mx.clear_cache()
    if "train" in a.parts:
        guarded("train", lambda: part_train(mx.bfloat16, a.steps))


if __name__ == "__main__":
    main()
