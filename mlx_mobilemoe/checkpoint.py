"""The checkpoint contract: official MobileMoE folders <-> MLX parameters.

Every layout conversion lives here. A folder holds config.json, model.safetensors (or shards
with model.safetensors.index.json), tokenizer.json + tokenizer_config.json and optionally
generation_config.json. QAT tensors (U8 packed int4 + F16 scales) become MLX affine 4-bit
g32 losslessly (see quant.py); BF16 tensors load as float. `save` writes the same names,
dtypes and shapes, so every MobileMoE tool reads what we write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Optional, Union

import mlx.core as mx

from . import quant
from .config import ConfigError, ModelArgs
from .model import Model

DEFAULT_MODEL = Path(__file__).parent / "default_model"
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja"]


class CheckpointError(ValueError):
    """A checkpoint folder or file that does not match the contract."""


# --- safetensors headers ----------------------------------------------------------------

_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
             "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
_MX_TO_ST = {mx.uint8: "U8", mx.float16: "F16", mx.bfloat16: "BF16", mx.float32: "F32",
             mx.uint32: "U32", mx.int32: "I32", mx.int8: "I8"}
MAX_HEADER = 100 * 1024 * 1024


def read_header(path: Path) -> dict:
    """Parse and validate a safetensors header: {name: (dtype, shape)}, no data read."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path.name}: file of {size} bytes is too short for a "
                                  "safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path.name}: header length {n} runs past the end of the "
                                  f"{size}-byte file (truncated or not safetensors)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path.name}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: header is not a JSON object")
    data_size = size - 8 - n
    out, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path.name}: tensor {name!r} has a malformed entry") from None
        if dtype not in _ITEMSIZE:
            raise CheckpointError(f"{path.name}: tensor {name!r} has unknown dtype {dtype!r}")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise CheckpointError(f"{path.name}: tensor {name!r} has a bad shape {shape}")
        nbytes = math.prod(shape) * _ITEMSIZE[dtype]
        if not (isinstance(begin, int) and isinstance(end, int)) or end - begin != nbytes \
                or begin < 0:
            raise CheckpointError(f"{path.name}: tensor {name!r} spans [{begin}, {end}) but "
                                  f"{dtype} {shape} needs {nbytes} bytes")
        if end > data_size:
            raise CheckpointError(f"{path.name}: tensor {name!r} ends at byte {end}, past the "
                                  f"end of the data ({data_size} bytes): file truncated?")
        spans.append((begin, end, name))
        out[name] = (dtype, tuple(shape))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise CheckpointError(f"{path.name}: tensors {n0!r} and {n1!r} overlap")
    return out


def _weight_files(folder: Path) -> list:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).exists()]
        if missing:
            raise CheckpointError(f"{folder}: shard(s) named in the index are missing: {missing}")
        return [folder / f for f in files]
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found
    raise CheckpointError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def read_tensors(folder: Path) -> tuple[dict, dict]:
    """All tensors of a folder (validated headers first) and their header entries."""
    tensors, headers = {}, {}
    for f in _weight_files(folder):
        h = read_header(f)
        dup = set(h) & set(headers)
        if dup:
            raise CheckpointError(f"tensor(s) {sorted(dup)[:3]} appear in more than one shard")
        headers.update(h)
        try:
            tensors.update(mx.load(str(f)))
        except Exception as e:  # mlx raises RuntimeError/ValueError on unreadable data
            raise CheckpointError(f"{f.name}: could not read tensors ({e})") from None
    return tensors, headers


# --- name and layout mapping ------------------------------------------------------------

def expected_tensors(args: ModelArgs) -> dict:
    """Official tensor name -> (dtype, shape) for a config (QAT or BF16 layout)."""
    H, I, S, E, V = (args.hidden_size, args.intermediate_size, args.intermediate_size_mlp,
                     args.num_local_experts, args.vocab_size)
    nh, nkv, hd = args.num_attention_heads, args.num_key_value_heads, args.head_dim
    qat = args.is_quantized
    g = quant.GROUP_SIZE
    out = {}

    def lin(name, o, i):
        if qat:
            out[f"{name}.qweight"] = ("U8", (o, i // 2))
            out[f"{name}.weight_scale"] = ("F16", (o, i // g))
        else:
            out[f"{name}.weight"] = ("BF16", (o, i))

    lin("model.embed_tokens", V, H)
    out["model.norm.weight"] = ("BF16", (H,))
    for n in range(args.num_hidden_layers):
        p = f"model.layers.{n}"
        out[f"{p}.input_layernorm.weight"] = ("BF16", (H,))
        out[f"{p}.post_attention_layernorm.weight"] = ("BF16", (H,))
        for proj, o, i in (("q", nh * hd, H), ("k", nkv * hd, H), ("v", nkv * hd, H),
                           ("o", H, nh * hd)):
            lin(f"{p}.self_attn.{proj}_proj", o, i)
        f = f"{p}.feed_forward"
        out[f"{f}.router.weight"] = ("F32", (E, H))
        out[f"{f}.expert_bias"] = ("BF16", (E,))
        for name, i, o in (("gate_up", H, 2 * I), ("down", I, H)):
            if qat:
                out[f"{f}.experts.{name}_qweight"] = ("U8", (E, i, o // 2))
                out[f"{f}.experts.{name}_scale"] = ("F16", (E, i, o // g))
            else:
                out[f"{f}.experts.{name}_proj"] = ("BF16", (E, i, o))
        if S:
            for proj, o, i in (("gate", S, H), ("up", S, H), ("down", H, S)):
                lin(f"{f}.shared_expert.{proj}_proj", o, i)
    return out


def _official_to_mlx_names(tensors: dict, args: ModelArgs) -> dict:
    """Official tensors -> {mlx parameter path: array} (lossless)."""
    out = {}
    qat = args.is_quantized
    for name, t in tensors.items():
        if qat and name.endswith(".qweight"):
            base = name[: -len(".qweight")]
            w, s, b = quant.official_to_mlx(t, tensors[base + ".weight_scale"])
            out[base + ".weight"], out[base + ".scales"], out[base + ".biases"] = w, s, b
        elif qat and name.endswith(("_qweight",)):
            base, proj = name.rsplit(".", 1)
            proj = proj[: -len("_qweight")]
            w, s, b = quant.official_to_mlx(t, tensors[f"{base}.{proj}_scale"])
            p = f"{base}.{proj}"
            out[p + ".weight"], out[p + ".scales"], out[p + ".biases"] = w, s, b
        elif name.endswith((".weight_scale", "_scale")) and qat:
            continue
        elif name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            out[name[: -len("_proj")] + ".weight"] = t
        else:
            out[name] = t
    return out


def official_state(model: Model) -> dict:
    """The model's parameters under official names and dtypes (what `save` writes)."""
    flat = dict(_flatten(model.parameters()))
    qat = model.args.is_quantized
    out = {}
    for path, t in flat.items():
        if path.endswith(".biases"):
            continue  # always -8 * scales; implied by the format
        if path.endswith(".scales"):
            continue  # written with its weight
        base = path[: -len(".weight")] if path.endswith(".weight") else path
        is_expert = base.endswith(("experts.gate_up", "experts.down"))
        if qat and t.dtype == mx.uint32:
            packed, scales = quant.mlx_to_official(t, flat[base + ".scales"])
            if is_expert:
                head, proj = base.rsplit(".", 1)
                out[f"{head}.{proj}_qweight"] = packed
                out[f"{head}.{proj}_scale"] = scales.astype(mx.float16)
            else:
                out[f"{base}.qweight"] = packed
                out[f"{base}.weight_scale"] = scales.astype(mx.float16)
        elif is_expert:
            out[f"{base}_proj"] = t.astype(mx.bfloat16)
        elif path.endswith("router.weight"):
            out[path] = t.astype(mx.float32)
        else:
            out[path] = t.astype(mx.bfloat16)
    return out


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}{k}.")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _flatten(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], tree


def check_tensors(headers: dict, args: ModelArgs) -> None:
    """Compare a file's header to the contract; name every missing/unknown/misshapen tensor."""
    want = expected_tensors(args)
    missing = sorted(set(want) - set(headers))
    unknown = sorted(set(headers) - set(want))
    wrong = [f"{n}: file has {headers[n][0]} {list(headers[n][1])}, expected "
             f"{want[n][0]} {list(want[n][1])}"
             for n in sorted(set(want) & set(headers))
             if headers[n][1] != want[n][1] or not _dtype_ok(headers[n][0], want[n][0])]
    problems = []
    if missing:
        problems.append(f"missing tensor(s): {_names(missing)}")
    if unknown:
        problems.append(f"unknown tensor(s): {_names(unknown)}")
    if wrong:
        problems.append("wrong shape/dtype: " + "; ".join(wrong[:5]))
    if problems:
        layout = "QAT (int4)" if args.is_quantized else "BF16"
        raise CheckpointError(f"checkpoint does not match the MobileMoE {layout} layout: "
                              + " | ".join(problems))


def _dtype_ok(have: str, want: str) -> bool:
    # Float tensors of a float checkpoint may come as F32/F16/BF16; packed ones may not vary.
    floats = {"F32", "F16", "BF16"}
    return have == want or (want in floats and have in floats and want != "F16")


def _names(names):
    return ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")


# --- public API -------------------------------------------------------------------------

def resolve(path_or_hf_id: Union[str, Path, None]) -> Path:
    """A local folder, or a Hugging Face id fetched through huggingface-hub."""
    if path_or_hf_id is None:
        if not (DEFAULT_MODEL / "config.json").exists():
            raise CheckpointError(
                f"the bundled default model is not present at {DEFAULT_MODEL}; pass --model "
                "with a MobileMoE folder or Hugging Face id")
        return DEFAULT_MODEL
    p = Path(path_or_hf_id).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p} is not a folder")
        return p
    s = str(path_or_hf_id)
    if s.count("/") != 1 or s.startswith((".", "/", "~")):
        raise CheckpointError(f"{s}: no such folder, and not a Hugging Face id (owner/name)")
    return _download(s)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except GatedRepoError:
        raise CheckpointError(
            f"{repo_id} is gated: accept its licence on huggingface.co, then log in with "
            "`hf auth login` or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{repo_id}: no such repository on the Hugging Face hub (or no "
                              "access to it with the current token)") from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{repo_id}: not in the local Hugging Face cache and the hub cannot be reached "
            "(offline?); download it once with network access or pass a local folder") from None


def load_config(folder: Path) -> ModelArgs:
    f = folder / "config.json"
    if not f.exists():
        raise CheckpointError(f"{folder}: no config.json")
    try:
        d = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None
    try:
        return ModelArgs.from_dict(d)
    except ConfigError as e:
        raise CheckpointError(f"{f}: {e}") from None
    except TypeError as e:
        raise CheckpointError(f"{f}: {e}") from None


def load_model(path_or_hf_id=None, dtype=mx.float32) -> Model:
    folder = resolve(path_or_hf_id)
    args = load_config(folder)
    tensors, headers = read_tensors(folder)
    check_tensors(headers, args)
    model = Model(args)
    weights = _official_to_mlx_names(tensors, args)
    del tensors
    model.load_weights(list(weights.items()), strict=True)
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    model.eval()
    return model


def load_tokenizer(folder: Path):
    """mlx-lm's TokenizerWrapper over the folder's tokenizer.json, with a streaming
    detokenizer that matches the tokenizer's decoder."""
    from mlx_lm import tokenizer_utils as tu
    from transformers import PreTrainedTokenizerFast

    f = Path(folder) / "tokenizer.json"
    if not f.exists():
        raise CheckpointError(f"{folder}: no tokenizer.json")
    try:
        decoder = json.loads(f.read_text()).get("decoder") or {}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None
    detok = tu.NaiveStreamingDetokenizer
    if tu._is_bpe_decoder(decoder):
        detok = tu.BPEStreamingDetokenizer
    elif tu._is_spm_decoder(decoder):
        detok = tu.SPMStreamingDetokenizer
    # Not AutoTokenizer: it would parse config.json as a transformers model config.
    tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    eos = None  # a tokenizer-only folder is fine; a model folder's config names its eos ids
    if (Path(folder) / "config.json").exists():
        eos = load_config(Path(folder)).eos_token_ids or None
    return tu.TokenizerWrapper(tok, detokenizer_class=detok, eos_token_ids=eos)


def load(path_or_hf_id=None, dtype=mx.float32):
    """(model, tokenizer) from a MobileMoE folder or Hugging Face id (None: bundled model)."""
    folder = resolve(path_or_hf_id)
    return load_model(folder, dtype=dtype), load_tokenizer(folder)


def save(model: Model, tokenizer, path, quantized: Optional[bool] = None,
         max_shard_bytes: int = 4 << 30) -> Path:
    """Write `model` (+ tokenizer) in the official layout, atomically (temp folder + rename).

    quantized=None keeps the model's own layout; True quantizes a float model to int4 by
    round-to-nearest first (in place); False refuses a quantized model (no silent dequant)."""
    from .model import quantize_model

    if quantized is None:
        quantized = model.args.is_quantized
    if quantized and not model.args.is_quantized:
        quantize_model(model)
    if not quantized and model.args.is_quantized:
        raise CheckpointError("save(quantized=False) of an int4 model would invent float "
                              "weights; load the float checkpoint instead")
    path = Path(path)
    with atomic_folder(path) as tmp:
        _write_shards(official_state(model), tmp, max_shard_bytes)
        (tmp / "config.json").write_text(json.dumps(model.args.to_dict(), indent=2) + "\n")
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp)
    return path


@contextlib.contextmanager
def atomic_folder(path: Path):
    """Yield a temporary sibling folder; on success it replaces `path`, on error it vanishes,
    so a reader never sees a half-written folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_tokenizer(tokenizer, folder: Path) -> None:
    """tokenizer.json + tokenizer_config.json, the chat template inside the latter (the
    contract's place for it; transformers >= 5 would write chat_template.jinja)."""
    inner = getattr(tokenizer, "_tokenizer", tokenizer)
    inner.save_pretrained(str(folder))
    jinja = Path(folder) / "chat_template.jinja"
    if jinja.exists():
        cfg_path = Path(folder) / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["chat_template"] = jinja.read_text()
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
        jinja.unlink()


def _write_shards(state: dict, folder: Path, max_bytes: int) -> None:
    shards, cur, size = [], {}, 0
    for name in sorted(state):  # deterministic file contents
        t = state[name]
        if cur and size + t.nbytes > max_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = t
        size += t.nbytes
    shards.append(cur)
    meta = {"format": "pt"}
    if len(shards) == 1:
        mx.save_safetensors(str(folder / "model.safetensors"), shards[0], metadata=meta)
        return
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        mx.save_safetensors(str(folder / fname), shard, metadata=meta)
        for n, t in shard.items():
            weight_map[n] = fname
            total += t.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
