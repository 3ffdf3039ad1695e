"""The checkpoint contract: official MobileMoE folders <-> MLX parameters.

Every layout conversion lives here. A folder holds config.json, model.safetensors (or shards
with model.safetensors.index.json), tokenizer.json + tokenizer_config.json and optionally
generation_config.json. QAT tensors (U8 packed int4 + F16 scales) become MLX affine 4-bit
g32 losslessly (see quant.py); BF16 tensors load as float. `save` writes the same names,
dtypes and shapes, so every MobileMoE tool reads what we write.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from pathlib import Path
from typing import Optional, Union

import mlx.core as mx

from . import quant
from .config import ConfigError, ModelArgs
from .fsutil import atomic_folder, recover, staging_names
from .model import Model

DEFAULT_MODEL = Path(__file__).parent / "default_model"
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja"]


class CheckpointError(ValueError):
    """A checkpoint folder or file that does not match the contract."""


class TokenizerError(CheckpointError):
    """tokenizer.json / tokenizer_config.json / chat template we cannot use."""


class ConfigFileError(CheckpointError, ConfigError):
    """config.json (or generation_config.json) we cannot read or run: both a ConfigError and
    a CheckpointError, so either `except` catches it."""


# --- bounded, regular-file reads --------------------------------------------------------

MAX_JSON_BYTES = {"config.json": 1 << 20, "generation_config.json": 1 << 20,
                  "tokenizer_config.json": 16 << 20, "tokenizer.json": 64 << 20,
                  "model.safetensors.index.json": 64 << 20}
MAX_JSON_DEPTH = 64  # the deepest official file (tokenizer.json) nests 5 levels


def regular_file(path: Path, error=CheckpointError) -> os.stat_result:
    """stat() of `path`, refusing anything that is not a regular file (a FIFO would block,
    /dev/zero never ends, a directory cannot be read) without opening it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as e:
        raise error(f"{path}: cannot stat ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise error(f"{path}: is {kind}")
    return st


def _json_depth(text: str) -> int:
    """Deepest [ / { nesting outside strings (so the parser never recurses too deep)."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > MAX_JSON_DEPTH:
                    return best
        elif ch in "]}":
            depth -= 1
    return best


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes, where: str, error=CheckpointError,
               max_depth: Optional[int] = MAX_JSON_DEPTH):
    """Strict JSON from bytes: UTF-8, standard (no NaN/Infinity), nesting bounded."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: not UTF-8 text (byte {e.start})") from None
    # The depth scan is a Python pass over the text: done for configs and headers (small);
    # tokenizer files (max_depth=None) rely on the parsers' own recursion bounds.
    if max_depth is not None and text.count("[") + text.count("{") > max_depth \
            and _json_depth(text) > max_depth:
        raise error(f"{where}: JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise error(f"{where}: not valid JSON ({e})") from None


def read_json(path: Path, error=CheckpointError, max_bytes: Optional[int] = None):
    """A JSON file of the folder, read with a size bound (by file name) and parse_json."""
    path = Path(path)
    limit = max_bytes or MAX_JSON_BYTES.get(path.name, 1 << 20)
    st = regular_file(path, error)
    if st.st_size > limit:
        raise error(f"{path}: {st.st_size} bytes, more than the {limit} this loader reads")
    with open(path, "rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise error(f"{path}: more than the {limit} bytes this loader reads")
    depth = None if path.name.startswith("tokenizer") else MAX_JSON_DEPTH
    return parse_json(raw, str(path), error, depth)


# --- safetensors headers ----------------------------------------------------------------

_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
             "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
_MX_TO_ST = {mx.uint8: "U8", mx.float16: "F16", mx.bfloat16: "BF16", mx.float32: "F32",
             mx.uint32: "U32", mx.int32: "I32", mx.int8: "I8"}
MAX_HEADER = 100 * 1024 * 1024


def _is_uint(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_header(path: Path) -> dict:
    """Parse and validate a safetensors header: {name: (dtype, shape)}, no data read.
    The tensors must cover the data section exactly (no gap, overlap or trailing byte)."""
    path = Path(path)
    size = regular_file(path).st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path.name}: file of {size} bytes is too short for a "
                                  "safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path.name}: header length {n} runs past the end of the "
                                  f"{size}-byte file (truncated or not safetensors)")
        header_bytes = f.read(n)
    if len(header_bytes) != n:
        raise CheckpointError(f"{path.name}: file shrank while reading its header")
    header = parse_json(header_bytes, f"{path.name}: header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: header is not a JSON object")
    data_size = size - 8 - n
    out, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise CheckpointError(f"{path.name}: __metadata__ must map strings to strings")
            continue
        if not isinstance(info, dict):
            raise CheckpointError(f"{path.name}: tensor {name!r} entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
            raise CheckpointError(f"{path.name}: tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(_is_uint(d) for d in shape):
            raise CheckpointError(f"{path.name}: tensor {name!r} has a bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(_is_uint(o) for o in offsets)):
            raise CheckpointError(f"{path.name}: tensor {name!r} has bad data_offsets "
                                  f"{offsets!r}")
        begin, end = offsets
        nbytes = math.prod(shape) * _ITEMSIZE[dtype]
        if end - begin != nbytes:
            raise CheckpointError(f"{path.name}: tensor {name!r} spans [{begin}, {end}) but "
                                  f"{dtype} {shape} needs {nbytes} bytes")
        if end > data_size:
            raise CheckpointError(f"{path.name}: tensor {name!r} ends at byte {end}, past the "
                                  f"end of the data ({data_size} bytes): file truncated?")
        spans.append((begin, end, name))
        out[name] = (dtype, tuple(shape))
    spans.sort()
    pos, prev = 0, None
    for b, e, name in spans:
        if b < pos:
            raise CheckpointError(f"{path.name}: tensors {prev!r} and {name!r} overlap")
        if b > pos:
            raise CheckpointError(f"{path.name}: bytes [{pos}, {b}) of the data belong to no "
                                  "tensor (corrupt header length or offsets)")
        pos, prev = e, name
    if pos != data_size:
        raise CheckpointError(f"{path.name}: the tensors cover {pos} of the {data_size} data "
                              "bytes; the rest belongs to no tensor (corrupt header length, "
                              "or trailing bytes)")
    return out


def _weight_files(folder: Path) -> list:
    index = folder / "model.safetensors.index.json"
    if os.path.lexists(index):
        d = read_json(index)
        weight_map = d.get("weight_map") if isinstance(d, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise CheckpointError(f"{index}: weight_map must be a non-empty object mapping "
                                  "tensor names to file names")
        files = sorted(set(weight_map.values()))
        odd = [f for f in files if "/" in f or "\\" in f or f in (".", "..")
               or not f.endswith(".safetensors")]
        if odd:
            raise CheckpointError(f"{index}: shard names must be .safetensors files in the "
                                  f"folder, got {odd[:3]}")
        missing = [f for f in files if not os.path.lexists(folder / f)]
        if missing:
            raise CheckpointError(f"{folder}: shard(s) named in the index are missing: {missing}")
        return [folder / f for f in files]
    single = folder / "model.safetensors"
    if os.path.lexists(single):
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

def _finish_interrupted_save(p: Path) -> None:
    """A save into `p` killed between its two renames leaves `p` absent beside the complete
    new folder: finish it as the next save would (fsutil.recover), so a reader loads the
    newest complete checkpoint. Nothing of the writer's beside `p`: nothing to do; a place
    this process may not write: left as it is (loading then sees what is there)."""
    try:
        if staging_names(p):
            recover(p)
    except OSError:
        pass


def resolve(path_or_hf_id: Union[str, Path, None], revision: Optional[str] = None) -> Path:
    """A local folder, a Hugging Face cache folder (models--owner--name: its refs/main or
    `revision` snapshot), or a Hugging Face id fetched through huggingface-hub (which reads
    its cache first; HF_HUB_OFFLINE=1 never touches the network)."""
    if revision is not None and (not isinstance(revision, str) or not revision.strip()
                                 or len(revision) > 256 or ".." in revision
                                 or any(c.isspace() for c in revision)):
        raise CheckpointError(f"revision {revision!r} is not a branch, tag or commit")
    if path_or_hf_id is None:
        if revision is not None:
            raise CheckpointError("a revision needs a Hugging Face id or cache folder")
        if not (DEFAULT_MODEL / "config.json").exists():
            raise CheckpointError(
                f"the bundled default model is not present at {DEFAULT_MODEL}; pass --model "
                "with a MobileMoE folder or Hugging Face id")
        return DEFAULT_MODEL
    p = Path(path_or_hf_id).expanduser()
    _finish_interrupted_save(p)
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p} is not a folder")
        if (p / "snapshots").is_dir() and (p / "refs").is_dir():
            return _cache_snapshot(p, revision)
        if revision is not None:
            raise CheckpointError(f"{p}: --revision applies to Hugging Face ids and cache "
                                  "folders, not to a plain folder")
        return p
    s = str(path_or_hf_id)
    if s.count("/") != 1 or s.startswith((".", "/", "~")) or not all(s.split("/")):
        raise CheckpointError(f"{s}: no such folder, and not a Hugging Face id (owner/name)")
    return _download(s, revision)


def _cache_snapshot(repo: Path, revision: Optional[str]) -> Path:
    """snapshots/<commit> of a Hugging Face cache repo folder; `revision` is a commit hash or
    a ref name under refs/ (default main)."""
    rev = revision or "main"
    commit = rev
    ref = repo / "refs" / rev
    if not (repo / "snapshots" / rev).is_dir():
        if not ref.is_file():
            raise CheckpointError(f"{repo}: no snapshot or ref named {rev!r}")
        commit = ref.read_text(errors="replace").strip()
    snap = repo / "snapshots" / commit
    if "/" in commit or commit in ("", ".", "..") or not snap.is_dir():
        raise CheckpointError(f"{repo}: ref {rev!r} points at {commit!r}, which has no snapshot")
    return snap


def _download(repo_id: str, revision: Optional[str] = None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
    except GatedRepoError:
        raise CheckpointError(
            f"{repo_id} is gated: accept its licence on huggingface.co, then log in with "
            "`hf auth login` or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{repo_id}: no such repository on the Hugging Face hub (or no "
                              "access to it with the current token)") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{repo_id}: no revision {revision!r}") from None
    except HFValidationError as e:
        raise CheckpointError(f"{repo_id}: not a valid Hugging Face id ({e})") from None
    except LocalEntryNotFoundError:
        where = f" at revision {revision!r}" if revision else ""
        raise CheckpointError(
            f"{repo_id}: not in the local Hugging Face cache{where} and the hub cannot be "
            "reached (offline?); download it once with network access or pass a local "
            "folder") from None


def load_config(folder: Path) -> ModelArgs:
    f = Path(folder) / "config.json"
    if not os.path.lexists(f):
        raise ConfigFileError(f"{folder}: no config.json")
    d = read_json(f, ConfigFileError)
    try:
        return ModelArgs.from_dict(d)
    except ConfigError as e:
        raise ConfigFileError(f"{f}: {e}") from None


def generation_eos_ids(folder: Path, args: ModelArgs) -> list:
    """eos ids of generation_config.json (optional file), checked against the vocabulary."""
    f = Path(folder) / "generation_config.json"
    if not os.path.lexists(f):
        return []
    d = read_json(f, ConfigFileError)
    if not isinstance(d, dict):
        raise ConfigFileError(f"{f}: not a JSON object")
    e = d.get("eos_token_id")
    ids = e if isinstance(e, list) else [] if e is None else [e]
    V = args.vocab_size
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < V for i in ids):
        raise ConfigFileError(f"{f}: eos_token_id must be an integer or a list of integers in "
                              f"0..{V - 1} (vocab_size), got {e!r}")
    return list(ids)


# --- activation dtype -------------------------------------------------------------------

_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def default_dtype(args: ModelArgs, device=None):
    """The activation dtype a checkpoint runs in when none is asked for.
    GPU: int4 (QAT) checkpoints float16 (the dtype of their scales and of the fused int4
    kernels); float checkpoints their own dtype (config torch_dtype, bfloat16 for the released
    ones), so a BF16 checkpoint does not double in memory. CPU: float32 (MLX's CPU backend runs
    the float experts' gather_mm only in float32, and its BLAS matmuls are float32)."""
    device = device or mx.default_device()
    if device.type != mx.gpu:
        return mx.float32
    if args.is_quantized:
        return mx.float16
    return _DTYPES[args.torch_dtype]


def check_dtype(args: ModelArgs, dtype, device=None) -> None:
    """Refuse a dtype the device cannot run this checkpoint in (a clear error, not a
    RuntimeError from the first matmul)."""
    device = device or mx.default_device()
    if dtype not in _DTYPES.values():
        raise CheckpointError(f"activation dtype {dtype} is not one of float32, float16, "
                              "bfloat16")
    if device.type != mx.gpu and not args.is_quantized and dtype != mx.float32:
        name = {v: k for k, v in _DTYPES.items()}[dtype]
        raise CheckpointError(
            f"{name} cannot run this float (BF16) checkpoint on the CPU: MLX's CPU backend runs "
            "the experts' gather_mm only in float32; use --dtype float32 (the CPU default), a "
            "GPU, or an int4 checkpoint (--quantize)")


def load_model(path_or_hf_id=None, dtype=mx.float32, revision: Optional[str] = None,
               verify: bool = False) -> Model:
    """The model of a folder / Hugging Face id; dtype=None picks `default_dtype`. verify=True
    also checks every weight for NaN/Inf."""
    folder = resolve(path_or_hf_id, revision)
    args = load_config(folder)
    dtype = default_dtype(args) if dtype is None else dtype
    check_dtype(args, dtype)
    tensors, headers = read_tensors(folder)
    check_tensors(headers, args)
    if verify:
        check_finite(tensors)
    model = Model(args)
    weights = _official_to_mlx_names(tensors, args)
    del tensors
    model.load_weights(list(weights.items()), strict=True)
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    model.eval()
    return model


def check_finite(tensors: dict) -> None:
    """Every float tensor finite (NaN/Inf weights are refused, named). One evaluation for
    the whole checkpoint; names are looked up only when something is wrong."""
    floats = [(n, t) for n, t in sorted(tensors.items()) if mx.issubdtype(t.dtype, mx.floating)]
    if not floats:
        return
    flags = mx.stack([mx.all(mx.isfinite(t)) for _, t in floats])
    if bool(mx.all(flags).item()):
        return
    bad = [n for (n, _), ok in zip(floats, flags.tolist()) if not ok]
    raise CheckpointError(f"non-finite (NaN/Inf) values in tensor(s): {_names(bad)}")


def load_tokenizer(folder: Path, args: Optional[ModelArgs] = None):
    """mlx-lm's TokenizerWrapper over the folder's tokenizer.json, with a streaming
    detokenizer that matches the tokenizer's decoder, the chat template compiled and checked
    now (not at the first message), and the stop ids of config.json, generation_config.json
    and the tokenizer. With `args` (or a config.json beside it) the tokenizer's ids must fit
    the model's vocabulary."""
    from mlx_lm import tokenizer_utils as tu

    from .tokenizer import ChatTemplate, ChatTemplateError

    folder = Path(folder)
    f = folder / "tokenizer.json"
    if not os.path.lexists(f):
        raise TokenizerError(f"{folder}: no tokenizer.json")
    tok_json = read_json(f, TokenizerError)
    cfg_path = folder / "tokenizer_config.json"
    tok_cfg = read_json(cfg_path, TokenizerError) if os.path.lexists(cfg_path) else {}
    for path, d in ((f, tok_json), (cfg_path, tok_cfg)):
        if not isinstance(d, dict):
            raise TokenizerError(f"{path}: not a JSON object")
    decoder = tok_json.get("decoder") or {}
    if not isinstance(decoder, dict):
        raise TokenizerError(f"{f}: decoder must be an object")
    detok = tu.NaiveStreamingDetokenizer
    if tu._is_bpe_decoder(decoder):
        detok = tu.BPEStreamingDetokenizer
    elif tu._is_spm_decoder(decoder):
        detok = tu.SPMStreamingDetokenizer
    for name in _TRANSFORMERS_TOKENIZER_FILES:  # files transformers opens if present
        if os.path.lexists(folder / name):
            regular_file(folder / name, TokenizerError)
    tok = _hf_tokenizer(folder)
    if args is None and (folder / "config.json").exists():
        args = load_config(folder)
    eos = []
    if args is not None:
        check_vocab(tok, args, folder)
        eos = args.eos_token_ids + generation_eos_ids(folder, args)
    source = tok_cfg.get("chat_template")
    if source is None and os.path.lexists(folder / "chat_template.jinja"):
        jinja = folder / "chat_template.jinja"
        st = regular_file(jinja, TokenizerError)
        if st.st_size > 1 << 20:
            raise TokenizerError(f"{jinja}: {st.st_size} bytes, too large for a chat template")
        try:
            source = jinja.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise TokenizerError(f"{jinja}: not UTF-8 text") from None
    template = None
    if source is not None:
        special = {"bos_token": _token_text(tok.bos_token), "eos_token": _token_text(tok.eos_token)}
        try:
            template = ChatTemplate(source, special)
            template.check()
        except ChatTemplateError as e:
            raise TokenizerError(f"{cfg_path}: {e}") from None
    seen, stop = set(), []
    for i in eos:
        if i not in seen:
            seen.add(i)
            stop.append(i)
    add_bos = tok_cfg.get("add_bos_token")
    if add_bos is not None and not isinstance(add_bos, bool):
        raise TokenizerError(f"{cfg_path}: add_bos_token must be true or false, got {add_bos!r}")
    try:
        wrapper = tu.TokenizerWrapper(tok, detokenizer_class=detok, eos_token_ids=stop or None,
                                      chat_template=template)
    except Exception as e:  # mlx-lm inspects the vocabulary; a broken one fails here
        raise TokenizerError(f"{folder}: tokenizer unusable ({type(e).__name__}: {e})") from None
    # transformers >= 5 drops add_bos_token; plain-text prompts (generate.prompt_tokens)
    # get BOS exactly as the file says (None: the tokenizer's post-processor decides)
    wrapper._add_bos_token = add_bos
    return wrapper


_TRANSFORMERS_TOKENIZER_FILES = ("special_tokens_map.json", "added_tokens.json",
                                 "chat_template.json", "chat_template.jinja", "tokenizer.model",
                                 "vocab.json", "merges.txt")


def _token_text(t) -> Optional[str]:
    return t if isinstance(t, str) else getattr(t, "content", None)


def _hf_tokenizer(folder: Path):
    """transformers' PreTrainedTokenizerFast of the folder (not AutoTokenizer: it would parse
    config.json as a transformers model config); its errors become TokenizerError."""
    from transformers import PreTrainedTokenizerFast
    try:
        return PreTrainedTokenizerFast.from_pretrained(str(folder))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # many types; a Rust panic (pyo3 PanicException) is a
        # BaseException: found by scripts/fuzz_load.py on a mutated tokenizer.json
        raise TokenizerError(f"{folder}: tokenizer.json / tokenizer_config.json cannot be "
                             f"loaded ({type(e).__name__}: {str(e)[:300]})") from None


def check_vocab(tok, args: ModelArgs, folder) -> None:
    """Every id the tokenizer can produce (its vocabulary and special tokens) must be an id
    of the model's embedding, or a token would read past it."""
    n = len(tok)  # base vocabulary + added tokens
    ids = [i for i in tok.get_vocab().values()]
    top = max(ids) if ids else -1
    if n > args.vocab_size or top >= args.vocab_size:
        raise TokenizerError(
            f"{folder}: tokenizer has {n} tokens (largest id {top}) but the model's vocab_size "
            f"is {args.vocab_size}: its ids would index past the embedding")


def load(path_or_hf_id=None, dtype=None, revision: Optional[str] = None, verify: bool = False):
    """(model, tokenizer) from a MobileMoE folder or Hugging Face id (None: bundled model).
    dtype=None: the checkpoint's own dtype where the device runs it (`default_dtype`);
    revision pins a Hugging Face commit/branch/tag; verify=True checks weights for NaN/Inf."""
    folder = resolve(path_or_hf_id, revision)
    model = load_model(folder, dtype=dtype, verify=verify)
    return model, load_tokenizer(folder, model.args)


def save(model: Model, tokenizer, path, quantized: Optional[bool] = None,
         max_shard_bytes: int = 4 << 30) -> Path:
    """Write `model` (+ tokenizer) in the official layout, atomically (temp folder + rename).

    quantized=None keeps the model's own layout; True writes a float model as int4 by
    round-to-nearest (of a copy: `model` is not changed); False refuses a quantized model (no
    silent dequant)."""
    from .model import copy_model, quantize_model

    if quantized is None:
        quantized = model.args.is_quantized
    if quantized and not model.args.is_quantized:
        model = quantize_model(copy_model(model))
    if not quantized and model.args.is_quantized:
        raise CheckpointError("save(quantized=False) of an int4 model would invent float "
                              "weights; load the float checkpoint instead")
    path = Path(path)
    with atomic_folder(path) as tmp:  # refuses a folder holding files we did not write
        write_folder(model, tokenizer, tmp, max_shard_bytes)
    return path


def write_folder(model: Model, tokenizer, folder: Path, max_shard_bytes: int = 4 << 30):
    """The checkpoint files of `model` (+ tokenizer) into an existing empty folder, as they
    are (no layout change; `save` is the atomic, checked entry)."""
    _write_shards(official_state(model), folder, max_shard_bytes)
    cfg = model.args.to_dict()
    cfg["torch_dtype"] = "bfloat16"  # the float tensors are written as BF16
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder)


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
