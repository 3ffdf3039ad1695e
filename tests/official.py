"""An independent account of the official MobileMoE checkpoint and forward pass.

Written from DESIGN.md §3/§4 with NumPy only: it imports nothing from mlx_mobilemoe, so the
package is checked against a second reading of the spec, not against itself.
  - write_checkpoint(): random tensors in the exact official layout (QAT or BF16) + config
  - reference_logits(): the forward pass in float64
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

DT = {"U8": np.uint8, "F16": np.float16, "F32": np.float32, "BF16": np.uint16}

TINY = dict(
    model_type="mobilemoe", architectures=["MobileMoEForCausalLM"],
    vocab_size=320, hidden_size=64, intermediate_size=32, intermediate_size_mlp=64,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    num_local_experts=8, num_experts_per_tok=2, rms_norm_eps=1e-5, rope_theta=10000.0,
    rope_scaling={"rope_type": "llama3", "factor": 4.0, "original_max_position_embeddings": 32,
                  "low_freq_factor": 1.0, "high_freq_factor": 1.0},
    max_position_embeddings=512, routed_scaling_factor=1.0, norm_topk_prob=True,
    use_qk_norm=True, tie_word_embeddings=True, interleave_moe_layer_step=1,
    no_rope_layers=[1, 0], bos_token_id=0, eos_token_id=1,
)
QUANTIZATION = {"format": "mobilemoe-int4-g32", "group_size": 32, "embedding_group_size": 32,
                "qmin": -8, "qmax": 7, "symmetric": True, "scale_dtype": "float16",
                "packed": True}


# --- files ------------------------------------------------------------------------------

def write_safetensors(path, tensors: dict) -> None:
    """tensors: name -> (dtype string, ndarray holding that dtype's raw values)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float -> bfloat16 bit pattern (uint16), round to nearest even."""
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype(np.uint16)


def from_bf16(u: np.ndarray) -> np.ndarray:
    return (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def pack(q: np.ndarray) -> np.ndarray:
    """int q in [-8, 7] -> bytes, two per byte along the last axis, even index low nibble."""
    u = (q.astype(np.int16) & 0xF).astype(np.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack(b: np.ndarray) -> np.ndarray:
    lo, hi = (b & 0xF).astype(np.int16), (b >> 4).astype(np.int16)
    q = np.stack([lo, hi], -1).reshape(*b.shape[:-1], -1)
    return np.where(q > 7, q - 16, q)


def tensor_specs(cfg: dict, qat: bool) -> dict:
    """Official name -> (dtype, shape), from the table in DESIGN.md §3."""
    H, I, S, E, V = (cfg["hidden_size"], cfg["intermediate_size"], cfg["intermediate_size_mlp"],
                     cfg["num_local_experts"], cfg["vocab_size"])
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    specs = {}

    def lin(name, o, i):
        if qat:
            specs[name + ".qweight"] = ("U8", (o, i // 2))
            specs[name + ".weight_scale"] = ("F16", (o, i // 32))
        else:
            specs[name + ".weight"] = ("BF16", (o, i))

    lin("model.embed_tokens", V, H)
    specs["model.norm.weight"] = ("BF16", (H,))
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        specs[p + ".input_layernorm.weight"] = ("BF16", (H,))
        specs[p + ".post_attention_layernorm.weight"] = ("BF16", (H,))
        lin(p + ".self_attn.q_proj", nh * hd, H)
        lin(p + ".self_attn.k_proj", nkv * hd, H)
        lin(p + ".self_attn.v_proj", nkv * hd, H)
        lin(p + ".self_attn.o_proj", H, nh * hd)
        f = p + ".feed_forward"
        specs[f + ".router.weight"] = ("F32", (E, H))
        specs[f + ".expert_bias"] = ("BF16", (E,))
        if qat:
            specs[f + ".experts.gate_up_qweight"] = ("U8", (E, H, I))
            specs[f + ".experts.gate_up_scale"] = ("F16", (E, H, 2 * I // 32))
            specs[f + ".experts.down_qweight"] = ("U8", (E, I, H // 2))
            specs[f + ".experts.down_scale"] = ("F16", (E, I, H // 32))
        else:
            specs[f + ".experts.gate_up_proj"] = ("BF16", (E, H, 2 * I))
            specs[f + ".experts.down_proj"] = ("BF16", (E, I, H))
        if S:
            lin(f + ".shared_expert.gate_proj", S, H)
            lin(f + ".shared_expert.up_proj", S, H)
            lin(f + ".shared_expert.down_proj", H, S)
    return specs


def random_tensors(cfg: dict, qat: bool, seed: int = 0) -> dict:
    """Random official tensors: name -> (dtype, raw ndarray)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (dtype, shape) in tensor_specs(cfg, qat).items():
        if dtype == "U8":
            q = rng.integers(-8, 8, size=(*shape[:-1], shape[-1] * 2))
            out[name] = (dtype, pack(q))
        elif dtype == "F16":
            out[name] = (dtype, rng.uniform(0.02, 0.08, size=shape).astype(np.float16))
        elif name.endswith("router.weight"):
            out[name] = (dtype, rng.normal(0, 0.3, size=shape).astype(np.float32))
        elif name.endswith("expert_bias"):
            out[name] = (dtype, to_bf16(rng.normal(0, 0.1, size=shape)))
        elif name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            out[name] = (dtype, to_bf16(rng.uniform(0.8, 1.2, size=shape)))
        else:  # BF16 weights
            out[name] = (dtype, to_bf16(rng.normal(0, 0.15, size=shape)))
    return out


def write_checkpoint(folder, cfg: dict, qat: bool, seed: int = 0, shards: int = 1) -> dict:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = dict(cfg)
    if qat:
        cfg["quantization"] = dict(QUANTIZATION)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    tensors = random_tensors(cfg, qat, seed)
    if shards == 1:
        write_safetensors(folder / "model.safetensors", tensors)
    else:
        names = list(tensors)
        weight_map = {}
        for i in range(shards):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[i::shards]}
            write_safetensors(folder / fname, part)
            weight_map.update({n: fname for n in part})
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}))
    return tensors


# --- the forward pass in float64 --------------------------------------------------------

def weights_f64(tensors: dict, qat: bool) -> dict:
    """Official tensors -> float64 weights: linears [out, in], experts [E, in, out]."""
    w = {}
    for name, (dtype, a) in tensors.items():
        if name.endswith(".weight_scale") or name.endswith("_scale"):
            continue
        if name.endswith(".qweight"):
            base = name[: -len(".qweight")]
            s = tensors[base + ".weight_scale"][1].astype(np.float64)
            q = unpack(a).astype(np.float64)
            w[base + ".weight"] = q * np.repeat(s, 32, axis=-1)
        elif name.endswith("_qweight"):
            base = name[: -len("_qweight")]
            s = tensors[base + "_scale"][1].astype(np.float64)
            w[base] = unpack(a).astype(np.float64) * np.repeat(s, 32, axis=-1)
        elif name.endswith("_proj") and ".experts." in name:
            w[name[: -len("_proj")]] = from_bf16(a)
        elif dtype == "BF16":
            w[name] = from_bf16(a)
        else:
            w[name] = a.astype(np.float64)
    return w


def rms(x, eps, weight=None):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if weight is None else y * weight


def silu(x):
    return x / (1 + np.exp(-x))


def llama3_inv_freq(head_dim, theta, scaling):
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    if scaling:
        assert scaling["low_freq_factor"] == scaling["high_freq_factor"] == 1.0
        wavelen = 2 * math.pi / inv
        inv = np.where(wavelen > scaling["original_max_position_embeddings"],
                       inv / scaling["factor"], inv)
    return inv


def rope_adjacent(x, positions, inv_freq):
    """x (..., T, D): rotate pairs (x[2i], x[2i+1]) by position * inv_freq[i]."""
    ang = positions[:, None] * inv_freq[None, :]  # (T, D/2)
    c, s = np.cos(ang), np.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def route(x, router, bias, k, scale, renorm):
    """Sigmoid scores; top-k of score + bias (selection only); weights from the raw scores."""
    s = 1 / (1 + np.exp(-(x @ router.T)))
    idx = np.argsort(-(s + bias), axis=-1, kind="stable")[..., :k]
    w = np.take_along_axis(s, idx, -1)
    if renorm:
        w = w / (w.sum(-1, keepdims=True) + 1e-20)
    return idx, w * scale


def reference_logits(cfg: dict, tensors: dict, tokens) -> np.ndarray:
    """tokens (T,) -> logits (T, V) in float64."""
    qat = "quantization" in cfg
    W = weights_f64(tensors, qat)
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps, k = cfg["rms_norm_eps"], cfg["num_experts_per_tok"]
    T = len(tokens)
    emb = W["model.embed_tokens.weight"]
    h = emb[np.asarray(tokens)]
    pos = np.arange(T, dtype=np.float64)
    inv = llama3_inv_freq(hd, cfg["rope_theta"], cfg.get("rope_scaling"))
    causal = np.tril(np.ones((T, T), bool))
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        x = rms(h, eps, W[p + ".input_layernorm.weight"])
        q = (x @ W[p + ".self_attn.q_proj.weight"].T).reshape(T, nh, hd).transpose(1, 0, 2)
        kk = (x @ W[p + ".self_attn.k_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
        v = (x @ W[p + ".self_attn.v_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
        nope = cfg.get("no_rope_layers") or []
        uses_rope = not nope or nope[n] == 1
        if uses_rope:
            q, kk = rope_adjacent(q, pos, inv), rope_adjacent(kk, pos, inv)
            if cfg["use_qk_norm"]:
                q, kk = rms(q, eps), rms(kk, eps)
        rep = nh // nkv
        kk, v = np.repeat(kk, rep, axis=0), np.repeat(v, rep, axis=0)
        att = q @ kk.transpose(0, 2, 1) / math.sqrt(hd)
        att = np.where(causal, att, -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = (att @ v).transpose(1, 0, 2).reshape(T, nh * hd)
        h = h + o @ W[p + ".self_attn.o_proj.weight"].T

        x = rms(h, eps, W[p + ".post_attention_layernorm.weight"])
        f = p + ".feed_forward"
        idx, wts = route(x, W[f + ".router.weight"], W[f + ".expert_bias"], k,
                         cfg["routed_scaling_factor"], cfg["norm_topk_prob"])
        gate_up, down = W[f + ".experts.gate_up"], W[f + ".experts.down"]
        I = cfg["intermediate_size"]
        y = np.zeros_like(x)
        for t in range(T):
            for j in range(k):
                e = idx[t, j]
                gu = x[t] @ gate_up[e]
                y[t] += wts[t, j] * ((silu(gu[:I]) * gu[I:]) @ down[e])
        if cfg["intermediate_size_mlp"]:
            sp = f + ".shared_expert"
            g = x @ W[sp + ".gate_proj.weight"].T
            u = x @ W[sp + ".up_proj.weight"].T
            y += (silu(g) * u) @ W[sp + ".down_proj.weight"].T
        h = h + y
    h = rms(h, eps, W["model.norm.weight"])
    return h @ emb.T
