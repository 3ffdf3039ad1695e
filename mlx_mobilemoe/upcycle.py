"""Upcycle a dense Qwen3 / Llama checkpoint (Hugging Face layout) into a Mixture-of-Experts.

    python -m mlx_mobilemoe.upcycle --from DENSE --out OUT [--layers 8,12,16,20] \
        [--experts 4] [--top-k 2] [--noise 0.01] [--granular G] [--shared S] \
        [--format hf|mobilemoe]

Each chosen layer's SwiGLU FFN (gate, up: [I, H]; down: [H, I]) is cut into G slices of
width I / G along the intermediate axis (G = 1: the whole FFN). Because SwiGLU acts
element-wise on the intermediate axis, FFN(x) = sum over slices of slice(x) exactly. S of
the G slices may become an always-on shared expert (MobileMoE layout only); the other
R = G - S slices are each copied C = E / R times into E routed experts (TinyMoE: G = 1,
C = E copies), each copy plus `noise` x std(W) Gaussian noise. The router starts at zero
(plus `router_std` noise), so every expert has the same score; the combine weights are
chosen so that with every expert active (top-k = E) the layer reproduces the dense FFN
exactly (noise 0, router 0):

- hf (Qwen3 -> `qwen3_moe`, untouched layers in `mlp_only_layers`; Llama -> `mixtral`, all
  layers): softmax routing, weight 1/E each, so the routed experts' down_proj is scaled by R.
  With R = 1 (copies) the top-k weights are renormalised and any k gives the dense FFN.
- mobilemoe (our layout: fused kernels, MobileMoEKit, the trainer): sigmoid routing, score
  1/2 each; R = 1: renormalised top-k weights (any k gives the dense FFN), except top-1:
  no renormalisation and routed_scaling_factor 2 (sigmoid(0) x 2 = 1 at the configured k,
  and the router still gets a gradient); R > 1: no renormalisation and
  routed_scaling_factor = 2 / C (exact with every expert active). Needs every layer upcycled, tied
  embeddings, no attention bias, RoPE without scaling or llama3 scaling, and (Qwen3) unit
  q_norm / k_norm weights, since MobileMoE's qk-norm is weightless. The RoPE rows of q_proj
  and k_proj are permuted from the half-split rotation to adjacent pairs (same scores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np

from .checkpoint import CheckpointError, atomic_folder, resolve
from .config import ConfigError, ModelArgs

FAMILIES = ("qwen3", "llama")
FORMATS = ("hf", "mobilemoe")
_SKIP_FILES = (".safetensors", ".safetensors.index.json", "config.json", "README.md")


@dataclass
class Plan:
    experts: int = 4  # routed experts per upcycled layer (E)
    top_k: int = 2
    layers: Optional[list] = None  # None: every layer
    granular: int = 1  # G: slices per FFN
    shared: int = 0  # S of the G slices form an always-on shared expert (mobilemoe only)
    noise: float = 0.0  # per-copy Gaussian noise, relative to each weight's std
    router_std: float = 0.0
    seed: int = 0
    format: str = "hf"


def _need(cfg: dict, key: str):
    if cfg.get(key) is None:
        raise ConfigError(f"config.json has no {key}")
    return cfg[key]


# --- reading the dense source -----------------------------------------------------------

def read_dense(src) -> tuple[dict, dict, Path]:
    """(config dict, {name: mx.array}, folder) of a dense Qwen3 / Llama checkpoint."""
    folder = resolve(src)
    cfg_file = folder / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(f"{folder}: no config.json")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from None
    fam = cfg.get("model_type")
    if fam not in FAMILIES:
        raise ConfigError(f"{folder}: model_type {fam!r} cannot be upcycled (supported: "
                          f"{', '.join(FAMILIES)})")
    for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
              "vocab_size"):
        _need(cfg, k)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no *.safetensors weights")
    weights = {}
    for f in files:
        weights.update(mx.load(str(f)))
    if cfg.get("tie_word_embeddings", False):
        weights.pop("lm_head.weight", None)
    for i in range(cfg["num_hidden_layers"]):
        for p in ("gate_proj", "up_proj", "down_proj"):
            if f"model.layers.{i}.mlp.{p}.weight" not in weights:
                raise CheckpointError(f"{folder}: model.layers.{i}.mlp.{p}.weight missing (not "
                                      "a dense checkpoint?)")
    return cfg, weights, folder


def _rope(cfg: dict) -> tuple:
    """(theta, scaling dict or None) from rope_theta / rope_scaling or transformers 5's
    rope_parameters."""
    rp = cfg.get("rope_parameters") or {}
    theta = cfg.get("rope_theta", rp.get("rope_theta"))
    if theta is None:
        raise ConfigError("config.json has no rope_theta (nor rope_parameters.rope_theta)")
    rs = cfg.get("rope_scaling") or (rp if rp.get("rope_type") not in (None, "default")
                                     else None)
    if rs and rs.get("rope_type", rs.get("type")) in (None, "default"):
        rs = None
    return float(theta), rs


# --- the split --------------------------------------------------------------------------

def _check_plan(plan: Plan, cfg: dict) -> list:
    L, I = cfg["num_hidden_layers"], cfg["intermediate_size"]
    layers = list(range(L)) if plan.layers is None else sorted(set(plan.layers))
    bad = [i for i in layers if not 0 <= i < L]
    if bad or not layers:
        raise ConfigError(f"--layers {plan.layers}: must name layers in 0..{L - 1}")
    G, S, E = plan.granular, plan.shared, plan.experts
    if G < 1 or I % G:
        raise ConfigError(f"--granular {G} must divide intermediate_size {I}")
    if not 0 <= S < G:
        raise ConfigError(f"--shared {S} must be in 0..granular-1 ({G - 1})")
    R = G - S
    if E < 1 or E % R:
        raise ConfigError(f"--experts {E} must be a multiple of the routed slices "
                          f"granular - shared = {R}")
    if not 1 <= plan.top_k <= E:
        raise ConfigError(f"--top-k {plan.top_k} must be in 1..{E}")
    if plan.format not in FORMATS:
        raise ConfigError(f"--format {plan.format!r}: choose from {', '.join(FORMATS)}")
    return layers


def split_ffn(gate, up, down, plan: Plan, key):
    """One dense FFN -> (routed [(gate, up, down)] * E, shared (gate, up, down) or None).

    gate, up: [I, H]; down: [H, I] (Hugging Face orientation). Slice r of width w = I / G
    takes rows r*w:(r+1)*w of gate and up and the same columns of down. Shared: the first S
    slices; routed expert e = c * R + r is copy c of routed slice r. No scaling here."""
    G, S = plan.granular, plan.shared
    R, I = G - S, gate.shape[0]
    w = I // G
    sl = [(gate[r * w:(r + 1) * w], up[r * w:(r + 1) * w], down[:, r * w:(r + 1) * w])
          for r in range(G)]
    shared = None
    if S:
        shared = tuple(mx.concatenate([s[j] for s in sl[:S]], axis=1 if j == 2 else 0)
                       for j in range(3))
    routed = []
    for e in range(plan.experts):
        g, u, d = sl[S + e % R]
        if plan.noise:
            key, *ks = mx.random.split(key, 4)
            g, u, d = (t + (plan.noise * _std(t) * mx.random.normal(t.shape, key=k)
                            ).astype(t.dtype) for t, k in zip((g, u, d), ks))
        routed.append((g, u, d))
    return routed, shared, key


def _std(t):
    return mx.sqrt(mx.var(t.astype(mx.float32)))


def _router(plan: Plan, H: int, dtype, key):
    E = plan.experts
    if not plan.router_std:
        return mx.zeros((E, H), dtype), key
    key, k = mx.random.split(key)
    return (plan.router_std * mx.random.normal((E, H), key=k)).astype(dtype), key


# --- Hugging Face outputs (qwen3_moe, mixtral) ------------------------------------------

def to_hf(cfg: dict, weights: dict, plan: Plan) -> tuple[dict, dict]:
    fam = cfg["model_type"]
    layers = _check_plan(plan, cfg)
    L, H, I = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]
    G, S, E = plan.granular, plan.shared, plan.experts
    R = G - S
    if S:
        raise ConfigError("--shared needs --format mobilemoe (qwen3_moe and mixtral have no "
                          "always-on shared expert)")
    theta, rs = _rope(cfg)
    if rs:
        raise ConfigError(f"rope_scaling {rs.get('rope_type', rs.get('type'))!r}: mlx-lm's "
                          f"{'qwen3_moe' if fam == 'qwen3' else 'mixtral'} ignores it; use "
                          "--format mobilemoe (llama3 scaling)")
    if cfg.get("attention_bias"):
        raise ConfigError("attention_bias=true: the MoE targets have no attention bias")
    out = {k: v for k, v in weights.items() if ".mlp." not in k}
    key = mx.random.key(plan.seed)
    new = dict(cfg, rope_theta=theta)
    for k in ("architectures", "model_type", "_name_or_path", "rope_parameters"):
        new.pop(k, None)
    if fam == "qwen3":
        new.update(model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"],
                   num_experts=E, num_experts_per_tok=plan.top_k, moe_intermediate_size=I // G,
                   decoder_sparse_step=1, norm_topk_prob=R == 1,
                   mlp_only_layers=[i for i in range(L) if i not in layers],
                   router_aux_loss_coef=0.001, output_router_logits=False)
        moe_name, names = "mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
        router_name = "mlp.gate"
    else:
        if len(layers) != L:
            raise ConfigError("a Llama source upcycles into mixtral, which has no dense "
                              "layers: upcycle every layer (omit --layers)")
        hd = cfg.get("head_dim") or H // cfg["num_attention_heads"]
        if hd * cfg["num_attention_heads"] != H:
            raise ConfigError(f"head_dim {hd} x heads != hidden_size {H}: mixtral derives "
                              "head_dim from hidden_size; use --format mobilemoe")
        new.update(model_type="mixtral", architectures=["MixtralForCausalLM"],
                   num_local_experts=E, num_experts_per_tok=plan.top_k,
                   intermediate_size=I // G, router_aux_loss_coef=0.001,
                   output_router_logits=False, sliding_window=None)
        new.pop("head_dim", None)
        new.pop("mlp_bias", None)
        moe_name, names = "block_sparse_moe", {"gate": "w1", "up": "w3", "down": "w2"}
        router_name = "block_sparse_moe.gate"
    for i in range(L):
        p = f"model.layers.{i}"
        g, u, d = (weights[f"{p}.mlp.{n}_proj.weight"] for n in ("gate", "up", "down"))
        if i not in layers:
            out.update({f"{p}.mlp.{n}_proj.weight": t
                        for n, t in (("gate", g), ("up", u), ("down", d))})
            continue
        routed, _, key = split_ffn(g, u, d, plan, key)
        out[f"{p}.{router_name}.weight"], key = _router(plan, H, g.dtype, key)
        for e, (ge, ue, de) in enumerate(routed):
            q = f"{p}.{moe_name}.experts.{e}"
            out[f"{q}.{names['gate']}.weight"] = ge
            out[f"{q}.{names['up']}.weight"] = ue
            # softmax weight 1/E each, E / R = C copies of each slice: x R restores the sum
            out[f"{q}.{names['down']}.weight"] = (de * R).astype(de.dtype) if R > 1 else de
    return new, out


# --- MobileMoE output -------------------------------------------------------------------

def _rope_rows(w, n_heads: int, hd: int, inverse: bool = False):
    """Permute each head's output rows from half-split RoPE pairs (d, d + hd/2) to adjacent
    pairs (2d, 2d + 1): the MobileMoE kernel's `traditional` rotation. q.k is unchanged."""
    perm = np.stack([np.arange(hd // 2), np.arange(hd // 2) + hd // 2], axis=1).reshape(-1)
    if inverse:
        perm = np.argsort(perm)
    return w.reshape(n_heads, hd, -1)[:, mx.array(perm)].reshape(n_heads * hd, -1)


def dense_to_qwen3(model, out, tokenizer_dir=None) -> Path:
    """Write a dense MobileMoE model (one expert, k = 1, no shared expert, RoPE on every
    layer, qk-norm, no RoPE scaling) as the Hugging Face Qwen3 checkpoint it equals: q_norm /
    k_norm weights one, RoPE rows back in half-split order, the expert as the MLP."""
    a = model.args
    ok = (a.num_local_experts == 1 and a.num_experts_per_tok == 1 and not a.intermediate_size_mlp
          and a.norm_topk_prob and a.routed_scaling_factor == 1.0 and a.use_qk_norm
          and all(a.uses_rope(i) for i in range(a.num_hidden_layers)) and not a.rope_scaling
          and not a.is_quantized)
    if not ok:
        raise ConfigError("only a float dense MobileMoE (1 expert, top-1, no shared expert, RoPE "
                          "and qk-norm on every layer, no RoPE scaling) is a Qwen3 model")
    H, I, hd = a.hidden_size, a.intermediate_size, a.head_dim
    bf = mx.bfloat16
    m = model.model
    w = {"model.embed_tokens.weight": m.embed_tokens.weight.astype(bf),
         "model.norm.weight": m.norm.weight.astype(bf)}
    for i, layer in enumerate(m.layers):
        p = f"model.layers.{i}"
        at, ff = layer.self_attn, layer.feed_forward
        w[f"{p}.input_layernorm.weight"] = layer.input_layernorm.weight.astype(bf)
        w[f"{p}.post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight.astype(bf)
        for n, heads in (("q", a.num_attention_heads), ("k", a.num_key_value_heads)):
            t = getattr(at, f"{n}_proj").weight
            w[f"{p}.self_attn.{n}_proj.weight"] = _rope_rows(t, heads, hd, inverse=True).astype(bf)
            w[f"{p}.self_attn.{n}_norm.weight"] = mx.ones((hd,), bf)
        for n in ("v", "o"):
            w[f"{p}.self_attn.{n}_proj.weight"] = getattr(at, f"{n}_proj").weight.astype(bf)
        gu = ff.experts.gate_up.weight[0]  # [H, 2I]
        w[f"{p}.mlp.gate_proj.weight"] = gu[:, :I].T.astype(bf)
        w[f"{p}.mlp.up_proj.weight"] = gu[:, I:].T.astype(bf)
        w[f"{p}.mlp.down_proj.weight"] = ff.experts.down.weight[0].T.astype(bf)
    cfg = dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], hidden_size=H,
               intermediate_size=I, num_hidden_layers=a.num_hidden_layers,
               num_attention_heads=a.num_attention_heads,
               num_key_value_heads=a.num_key_value_heads, head_dim=hd,
               rms_norm_eps=a.rms_norm_eps, vocab_size=a.vocab_size,
               max_position_embeddings=a.max_position_embeddings, rope_theta=a.rope_theta,
               tie_word_embeddings=True, attention_bias=False, torch_dtype="bfloat16",
               bos_token_id=a.bos_token_id, eos_token_id=a.eos_token_id)
    out = Path(out)
    with atomic_folder(out) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), w, metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        if tokenizer_dir is not None:
            for f in Path(tokenizer_dir).iterdir():
                if f.is_file() and f.name.startswith(("tokenizer", "special_tokens")):
                    shutil.copy2(f, tmp / f.name)
    return out


def to_mobilemoe(cfg: dict, weights: dict, plan: Plan):
    """A MobileMoE `Model` (float32) from the dense checkpoint; refuses what it cannot map."""
    from .model import Model

    fam = cfg["model_type"]
    layers = _check_plan(plan, cfg)
    L, H, I = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]
    G, S, E = plan.granular, plan.shared, plan.experts
    R, C, w = G - S, E // (G - S), I // G
    if len(layers) != L:
        raise ConfigError("the MobileMoE layout has an MoE in every layer: upcycle every layer "
                          "(omit --layers) or use --format hf")
    if not cfg.get("tie_word_embeddings", False):
        raise ConfigError("untied embeddings: the MobileMoE layout ties the output head; use "
                          "--format hf")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ConfigError("attention/MLP bias: not part of the MobileMoE layout")
    if cfg.get("use_sliding_window"):
        raise ConfigError("sliding-window attention is not part of the MobileMoE layout")
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or \
        cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or H // nh
    if fam == "qwen3":
        for i in range(L):
            for n in ("q_norm", "k_norm"):
                t = weights[f"model.layers.{i}.self_attn.{n}.weight"]
                if not bool(mx.all(t == 1).item()):
                    raise ConfigError(
                        f"layer {i} {n} has learned weights; MobileMoE's qk-norm is weightless "
                        "so the attention would change: use --format hf (qwen3_moe)")
    theta, rs = _rope(cfg)
    if R == 1 and plan.top_k == 1:  # one expert at sigmoid(0) * 2 = 1, and the router learns
        norm, rsf = False, 2.0
    elif R == 1:  # renormalised copies: any k
        norm, rsf = True, 1.0
    else:  # every expert at 1/2 * 2/C: C copies of each slice add up to it once
        norm, rsf = False, 2.0 / C
    args = ModelArgs.from_dict(dict(
        vocab_size=cfg["vocab_size"], hidden_size=H, intermediate_size=w,
        intermediate_size_mlp=S * w, num_hidden_layers=L, num_attention_heads=nh,
        num_key_value_heads=nkv, head_dim=hd, num_local_experts=E,
        num_experts_per_tok=plan.top_k, rms_norm_eps=_need(cfg, "rms_norm_eps"),
        rope_theta=theta, rope_scaling=rs,
        max_position_embeddings=_need(cfg, "max_position_embeddings"),
        routed_scaling_factor=rsf, norm_topk_prob=norm,
        use_qk_norm=fam == "qwen3", tie_word_embeddings=True,
        bos_token_id=cfg.get("bos_token_id"), eos_token_id=cfg.get("eos_token_id")))
    f32 = mx.float32
    key = mx.random.key(plan.seed)
    new = {"model.embed_tokens.weight": weights["model.embed_tokens.weight"].astype(f32),
           "model.norm.weight": weights["model.norm.weight"].astype(f32)}
    for i in range(L):
        p = f"model.layers.{i}"
        for n in ("input_layernorm", "post_attention_layernorm"):
            new[f"{p}.{n}.weight"] = weights[f"{p}.{n}.weight"].astype(f32)
        for n, heads in (("q", nh), ("k", nkv), ("v", None), ("o", None)):
            t = weights[f"{p}.self_attn.{n}_proj.weight"].astype(f32)
            new[f"{p}.self_attn.{n}_proj.weight"] = _rope_rows(t, heads, hd) if heads else t
        g, u, d = (weights[f"{p}.mlp.{n}_proj.weight"].astype(f32)
                   for n in ("gate", "up", "down"))
        routed, shared, key = split_ffn(g, u, d, plan, key)
        f = f"{p}.feed_forward"
        new[f"{f}.router.weight"], key = _router(plan, H, f32, key)
        new[f"{f}.expert_bias"] = mx.zeros((E,), f32)
        new[f"{f}.experts.gate_up.weight"] = mx.stack(
            [mx.concatenate([ge.T, ue.T], axis=1) for ge, ue, _ in routed])  # [E, H, 2w]
        new[f"{f}.experts.down.weight"] = mx.stack([de.T for _, _, de in routed])  # [E, w, H]
        if shared is not None:
            for n, t in zip(("gate_proj", "up_proj", "down_proj"), shared):
                new[f"{f}.shared_expert.{n}.weight"] = t
    model = Model(args)
    model.load_weights(list(new.items()), strict=True)
    mx.eval(model.parameters())
    model.eval()
    return model


# --- writing ----------------------------------------------------------------------------

def upcycle(src, out, plan: Plan) -> Path:
    """Read the dense checkpoint `src`, write the MoE to `out` (atomically), return `out`."""
    from .checkpoint import save

    cfg, weights, folder = read_dense(src)
    out = Path(out)
    if plan.format == "mobilemoe":
        model = to_mobilemoe(cfg, weights, plan)
        save(model, None, out)
        target = "mobilemoe"
    else:
        new_cfg, new_w = to_hf(cfg, weights, plan)
        with atomic_folder(out) as tmp:
            mx.save_safetensors(str(tmp / "model.safetensors"), new_w, metadata={"format": "pt"})
            (tmp / "config.json").write_text(json.dumps(new_cfg, indent=2) + "\n")
        target = new_cfg["model_type"]
    for f in folder.iterdir():  # tokenizer and generation files
        if f.is_file() and not f.name.endswith(_SKIP_FILES):
            shutil.copy2(f, out / f.name)
    (out / "README.md").write_text(_readme(cfg, plan, target, src))
    return out


def _readme(cfg: dict, plan: Plan, target: str, src) -> str:
    L = cfg["num_hidden_layers"]
    layers = list(range(L)) if plan.layers is None else sorted(set(plan.layers))
    G, S, E = plan.granular, plan.shared, plan.experts
    R = G - S
    I = cfg["intermediate_size"]
    how = (f"{E} copies of the dense FFN" if G == 1 else
           f"the FFN cut into {G} slices of width {I // G}" +
           (f", {S} of them kept as an always-on shared expert" if S else "") +
           f", each of the {R} routed slices copied {E // R} time(s)")
    return f"""# Upcycled Mixture-of-Experts

Made by `python -m mlx_mobilemoe.upcycle` from the dense {cfg['model_type']} checkpoint
`{src}` (no training yet).

- format: `{target}`; layers upcycled: {layers if len(layers) < L else 'all'} of {L}
- per upcycled layer: {how}; {E} routed experts, top-{plan.top_k}
- copy noise: {plan.noise} x std of each weight (seed {plan.seed}); router init: \
{'zero' if not plan.router_std else f'N(0, {plan.router_std})'}
- with every expert active, zero noise and the zero router, each upcycled layer computes the
  dense FFN exactly (the combine weights are set for it; see mlx_mobilemoe/upcycle.py).

Run it with `mlx_lm.generate --model THIS_FOLDER` (hf formats) or
`python -m mlx_mobilemoe.generate --model THIS_FOLDER` (mobilemoe). Train the router with
`python -m mlx_mobilemoe.train configs/upcycle_router.yaml model=THIS_FOLDER ...`
(mobilemoe format; docs/upcycling.md).
"""


def _layers(s: str):
    if s in ("all", ""):
        return None
    try:
        return [int(x) for x in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes comma-separated integers or 'all', "
                                         f"got {s!r}") from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlx_mobilemoe.upcycle",
                                description="Upcycle a dense Qwen3/Llama checkpoint into an MoE.")
    p.add_argument("--from", dest="src", required=True, help="dense folder or Hugging Face id")
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=_layers, default=None, help="e.g. 8,12,16,20 (default all)")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--noise", type=float, default=0.01,
                   help="copy noise, relative to each weight's std (0: exact copies)")
    p.add_argument("--router-std", type=float, default=0.0)
    p.add_argument("--granular", type=int, default=1, help="slices per FFN (fine-grained)")
    p.add_argument("--shared", type=int, default=0,
                   help="slices kept as an always-on shared expert (--format mobilemoe)")
    p.add_argument("--format", choices=FORMATS, default="hf",
                   help="hf: qwen3_moe / mixtral (mlx-lm, transformers); mobilemoe: our layout")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    plan = Plan(experts=a.experts, top_k=a.top_k, layers=a.layers, granular=a.granular,
                shared=a.shared, noise=a.noise, router_std=a.router_std, seed=a.seed,
                format=a.format)
    try:
        out = upcycle(a.src, a.out, plan)
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"out": str(out), "format": plan.format}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
