"""Training data: tokenize once into memory-mapped token files, then stream batches.

A source is a text file, a folder of text files, a `{"text": ...}` jsonl, a
`{"messages": [...]}` jsonl (chat, for SFT) or an already prepared `<name>.tokens` folder
(`train.bin`, `val.bin`, `meta.json`). Each source is one domain with its own held-out split:
the last `val_fraction` of every file by bytes, cut at a line boundary (of every jsonl by
records). Batches are a pure function of (seed, step), so the data position saved with a
checkpoint is just the step and `--resume` replays the same batches.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..fsutil import atomic_folder

TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".text", ""}


class DataError(ValueError):
    """Training data we cannot read."""


# --- tokenizer helpers ------------------------------------------------------------------

def tokenizer_sha(tok_dir: Path) -> str:
    return hashlib.sha256((Path(tok_dir) / "tokenizer.json").read_bytes()).hexdigest()[:16]


def hf_tokenizer(tok_dir: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(tok_dir) / "tokenizer.json"))


def special_token_ids(tok_dir: Path) -> dict:
    from ..tokenizer import special_ids

    return special_ids(Path(tok_dir) / "tokenizer.json")


def eos_id(tok_dir: Path) -> int:
    from ..tokenizer import EOS

    ids = special_token_ids(tok_dir)
    if EOS in ids:
        return ids[EOS]
    cfg = tokenizer_config(tok_dir)
    eos = cfg.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    if eos in ids:
        return ids[eos]
    raise DataError(f"{tok_dir}: cannot find the end-of-text token")


def tokenizer_config(tok_dir: Path) -> dict:
    f = Path(tok_dir) / "tokenizer_config.json"
    return json.loads(f.read_text()) if f.exists() else {}


def encode_text(tok, text: str, chunk_bytes: int = 1 << 18, line_starts: bool = False):
    """Encode a long text in parallel chunks cut before a non-blank line (so no pre-token,
    not even a run of newlines, straddles two chunks). With line_starts, also return the
    indices of the tokens that begin a line."""
    chunks, start = [], 0
    while start < len(text):
        end = min(len(text), start + chunk_bytes)
        while end < len(text):
            nl = text.find("\n", end)
            if nl < 0:
                end = len(text)
                break
            end = nl + 1
            while end < len(text) and text[end].isspace():
                end += 1
            if end < len(text):
                break
        chunks.append(text[start:end])
        start = end
    encs = tok.encode_batch(chunks, add_special_tokens=False)
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encs]
    ids = np.concatenate(ids) if ids else np.zeros((0,), np.int64)
    if not line_starts:
        return ids
    starts, base = [], 0
    for chunk, e in zip(chunks, encs):
        first = np.array([o[0] for o in e.offsets], dtype=np.int64)
        nl = np.flatnonzero(np.frombuffer(chunk.encode("utf-32-le"), np.uint32) == 10)
        new = np.ones(len(first), bool)  # a character split over tokens: its first token
        new[1:] = first[1:] != first[:-1]
        at_line = (first == 0) | np.isin(first - 1, nl)
        starts.append(base + np.flatnonzero(at_line & new))
        base += len(first)
    return ids, (np.concatenate(starts) if starts else np.zeros((0,), np.int64))


# --- prepared token files ---------------------------------------------------------------

@dataclass
class TokenFile:
    """One domain: memory-mapped train and held-out token arrays."""

    path: Path
    meta: dict
    train: np.ndarray
    val: np.ndarray
    lines: Optional[np.ndarray] = None  # training-split tokens that begin a line

    @property
    def name(self) -> str:
        return self.meta["name"]

    @classmethod
    def open(cls, path) -> "TokenFile":
        path = Path(path)
        meta_f = path / "meta.json"
        if not meta_f.exists():
            raise DataError(f"{path}: not a prepared token folder (no meta.json)")
        meta = json.loads(meta_f.read_text())
        dt = np.dtype(meta["dtype"])
        arrs = []
        for split in ("train", "val"):
            f = path / f"{split}.bin"
            n = f.stat().st_size // dt.itemsize
            arrs.append(np.memmap(f, dtype=dt, mode="r", shape=(n,)) if n else
                        np.zeros((0,), dt))
        lines = None
        if (path / "lines.bin").exists():
            lines = np.fromfile(path / "lines.bin", dtype=np.uint32)
        return cls(path, meta, *arrs, lines=lines)


def write_token_file(path: Path, name: str, train: np.ndarray, val: np.ndarray,
                     vocab_size: int, extra: dict, lines=None) -> TokenFile:
    dt = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    path = Path(path)
    with atomic_folder(path) as tmp:
        train.astype(dt).tofile(tmp / "train.bin")
        val.astype(dt).tofile(tmp / "val.bin")
        if lines is not None:
            np.asarray(lines, np.uint32).tofile(tmp / "lines.bin")
        meta = {"name": name, "dtype": np.dtype(dt).name, "vocab_size": vocab_size,
                "train_tokens": int(train.size), "val_tokens": int(val.size), **extra}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return TokenFile.open(path)


def split_bytes(data: bytes, val_fraction: float) -> tuple:
    """(train, held-out): the last `val_fraction` by bytes, cut at a line boundary."""
    cut = len(data) - int(len(data) * val_fraction)
    nl = data.find(b"\n", cut)
    cut = nl + 1 if nl >= 0 else cut
    return data[:cut], data[cut:]


def _jsonl_rows(path: Path):
    """(line number, row) for every non-blank line; a row is a JSON object. A bad line is
    a DataError naming the file and the line."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        i = 0
        try:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as e:
                    raise DataError(f"{path}:{i}: not valid JSON ({e})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{i}: a row must be a JSON object, got "
                                    f"{type(row).__name__}")
                yield i, row
        except UnicodeDecodeError:
            raise DataError(f"{path}:{i + 1}: not UTF-8 text") from None


def read_jsonl(path: Path, field: Optional[str] = None) -> list:
    """Every row; with `field`, each row's string `field` (a DataError names the line)."""
    rows = []
    for i, row in _jsonl_rows(path):
        if field is not None:
            if not isinstance(row.get(field), str):
                raise DataError(f"{path}:{i}: no {field!r} string in this row")
            row = row[field]
        rows.append(row)
    return rows


def source_kind(path: Path) -> str:
    """'tokens', 'chat', 'text' (jsonl with "text" or plain text) for one data source."""
    path = Path(path)
    if path.is_dir() and (path / "meta.json").exists():
        return "tokens"
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix == ".jsonl" and path.is_file():
        for i, row in _jsonl_rows(path):
            if "messages" in row:
                return "chat"
            if "text" in row:
                return "text"
            raise DataError(f"{path}:{i}: jsonl rows need a 'text' or 'messages' field")
        raise DataError(f"{path}: empty jsonl")
    if path.is_dir() and not _text_files(path):
        raise DataError(f"{path}: no data files in this folder (text files with suffix "
                        f"{', '.join(sorted(s for s in TEXT_SUFFIXES if s))} or none, or "
                        ".jsonl)")
    return "text"


def check_sources(data) -> None:
    """Every configured source exists and is readable data (DataError otherwise); run
    before any tokenizing so a typo fails at once."""
    srcs = list(data) if isinstance(data, dict) else as_list(data)
    for s in srcs:
        source_kind(Path(s))


def _text_files(folder: Path) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
                  | {".jsonl"} and not p.name.startswith("."))


def documents(path: Path, val_fraction: float) -> tuple:
    """(train docs, held-out docs) as lists of str."""
    if path.is_dir():
        files = _text_files(path)
        if not files:
            source_kind(path)  # the DataError for an empty folder
        tr, va = [], []
        for f in files:
            a, b = documents(f, val_fraction)
            tr += a
            va += b
        return tr, va
    if path.suffix == ".jsonl":
        rows = read_jsonl(path, "text")
        n_val = max(1, int(round(len(rows) * val_fraction))) if len(rows) > 1 else 0
        return rows[: len(rows) - n_val], rows[len(rows) - n_val:]
    try:
        train, val = split_bytes(path.read_bytes(), val_fraction)
        return [train.decode("utf-8")], [val.decode("utf-8")] if val else []
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def prepare_text(path, tok_dir, cache: Path, val_fraction: float = 0.05,
                 name: Optional[str] = None) -> TokenFile:
    """Tokenize one text source (documents end with the end-of-text token) into the cache."""
    path = Path(path)
    st = path.stat()
    key = hashlib.sha256(json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns,
                                     tokenizer_sha(tok_dir), val_fraction]).encode())
    name = name or path.stem
    out = Path(cache) / f"{name}-{key.hexdigest()[:12]}.tokens"
    if (out / "meta.json").exists():
        return TokenFile.open(out)
    tok = hf_tokenizer(tok_dir)
    eos = eos_id(tok_dir)
    splits, train_lines = [], None
    for docs in documents(path, val_fraction):  # the training split, then the held-out one
        parts, starts, n = [], [], 0
        for d in docs:
            ids, st = encode_text(tok, d, line_starts=True)
            parts += [ids, np.array([eos])]
            starts.append(n + st)
            n += len(ids) + 1
        splits.append(np.concatenate(parts) if parts else np.zeros((0,), np.int64))
        if train_lines is None:
            train_lines = np.concatenate(starts) if starts else np.zeros((0,), np.int64)
    return write_token_file(out, name, *splits, vocab_size=tok.get_vocab_size(),
                            extra={"source": str(path), "tokenizer_sha": tokenizer_sha(tok_dir),
                                   "val_fraction": val_fraction}, lines=train_lines)


def open_domains(data, tok_dir, cache: Path, val_fraction: float) -> tuple:
    """([TokenFile], [weight]) for the configured text sources."""
    items = list(data.items()) if isinstance(data, dict) else [(d, None) for d in
                                                                 as_list(data)]
    files, weights = [], []
    sha = tokenizer_sha(tok_dir)
    for src, w in items:
        kind = source_kind(Path(src))
        if kind == "chat":
            raise DataError(f"{src}: chat data ({{'messages'}}) belongs to the sft/lora stages")
        tf = TokenFile.open(src) if kind == "tokens" else prepare_text(src, tok_dir, cache,
                                                                         val_fraction)
        if tf.meta.get("tokenizer_sha") not in (None, sha):
            raise DataError(f"{src}: tokenized with a different tokenizer than this stage's")
        files.append(tf)
        weights.append(float(w) if w is not None else float(len(tf.train)))
    total = sum(weights)
    if total <= 0:
        empty = [str(s) for (s, _), tf in zip(items, files) if not len(tf.train)]
        raise DataError(f"no training tokens in {', '.join(empty)}" if empty else
                        "data weights sum to zero")
    return files, [w / total for w in weights]


def as_list(data) -> list:
    return [data] if isinstance(data, (str, Path)) else list(data)


def is_chat_data(data) -> bool:
    srcs = list(data) if isinstance(data, dict) else as_list(data)
    kinds = {source_kind(Path(s)) for s in srcs}
    if "chat" in kinds and len(kinds) > 1:
        raise DataError("do not mix chat ({'messages'}) and text sources in one stage")
    return kinds == {"chat"}


# --- batches ----------------------------------------------------------------------------

class PackedData:
    """Fixed-length windows of the packed token streams, domains drawn by weight."""

    def __init__(self, domains: list, weights: list, seq_len: int, seed: int,
                 align: Optional[str] = None):
        self.starts = []
        for d in domains:
            if len(d.train) < seq_len + 1:
                raise DataError(f"{d.name}: {len(d.train)} training tokens, fewer than "
                                f"seq_len + 1 = {seq_len + 1}")
            if align == "line":
                if d.lines is None:
                    raise DataError(f"{d.path}: no line index (lines.bin); prepare it again "
                                    "to train with align: line")
                ok = d.lines[d.lines <= len(d.train) - seq_len - 1]
                if not len(ok):
                    raise DataError(f"{d.name}: no line starts a full window")
                self.starts.append(ok)
        self.domains, self.weights, self.seq_len, self.seed = domains, weights, seq_len, seed
        self.align = align

    def batch(self, step: int, batch_size: int, rows: slice):
        """Rows `rows` of the global batch of `batch_size` sequences for `step`:
        inputs (b, T) int32, targets (b, T) int32, loss mask (b, T) float32."""
        T = self.seq_len
        rng = np.random.default_rng([self.seed, step])
        dom = rng.choice(len(self.domains), size=batch_size, p=self.weights)
        u = rng.random(batch_size)
        xs = []
        for d, r in zip(dom[rows], u[rows]):
            toks = self.domains[d].train
            if self.align == "line":
                start = int(self.starts[d][int(r * len(self.starts[d]))])
            else:
                start = int(r * (len(toks) - T))
            xs.append(np.asarray(toks[start:start + T + 1], dtype=np.int32))
        xy = np.stack(xs)
        return xy[:, :-1], xy[:, 1:], np.ones((len(xs), T), np.float32)


def eval_windows(tokens: np.ndarray, seq_len: int, batch_size: int,
                 max_batches: int = 0):
    """Consecutive windows covering the held-out tokens once (the tail padded, mask 0)."""
    n = len(tokens) - 1
    starts = list(range(0, max(n, 0), seq_len))
    if max_batches:
        starts = starts[: max_batches * batch_size]
    for i in range(0, len(starts), batch_size):
        xs, ys, ms = [], [], []
        for s in starts[i:i + batch_size]:
            seg = np.asarray(tokens[s:s + seq_len + 1], dtype=np.int32)
            m = len(seg) - 1
            x, y, mask = (np.zeros(seq_len, np.int32), np.zeros(seq_len, np.int32),
                          np.zeros(seq_len, np.float32))
            x[:m], y[:m], mask[:m] = seg[:-1], seg[1:], 1.0
            xs.append(x), ys.append(y), ms.append(mask)
        yield np.stack(xs), np.stack(ys), np.stack(ms)


# --- chat (SFT) -------------------------------------------------------------------------

def render_chat(template: str, messages: list, add_generation_prompt: bool = False,
                **specials) -> str:
    """Render a chat template the way transformers does (sandboxed jinja2, trimmed blocks)."""
    return _compiled_template(template).render(messages=messages,
                                               add_generation_prompt=add_generation_prompt,
                                               **specials)


@functools.lru_cache(maxsize=8)
def _compiled_template(template: str):
    """Compiling costs milliseconds; an SFT set renders each conversation several times."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    return env.from_string(template)


def chat_template_of(tok_dir: Path) -> Optional[str]:
    cfg = tokenizer_config(tok_dir)
    t = cfg.get("chat_template")
    if t is None and (Path(tok_dir) / "chat_template.jinja").exists():
        t = (Path(tok_dir) / "chat_template.jinja").read_text()
    return t


def encode_chat(tok, template: str, messages: list, specials: dict) -> tuple:
    """(tokens, mask): mask 1 on what the assistant writes (its content and end-of-turn
    token), 0 on system/user turns and on the template's own headers."""
    done, toks, mask = "", [], []
    for i, msg in enumerate(messages):
        assistant = msg.get("role") == "assistant"
        before = render_chat(template, messages[:i], add_generation_prompt=assistant,
                             **specials)
        full = render_chat(template, messages[:i + 1], **specials)
        if not (before.startswith(done) and full.startswith(before)):
            raise DataError("chat template is not prefix-stable (a message changes how the "
                            "earlier ones render); cannot tell assistant tokens apart")
        for text, train in ((before[len(done):], False), (full[len(before):], assistant)):
            if text:
                ids = tok.encode(text, add_special_tokens=False).ids
                toks += ids
                mask += [float(train)] * len(ids)
        done = full
    return np.array(toks, np.int32), np.array(mask, np.float32)


class ChatData:
    """One conversation per row, truncated/padded to seq_len + 1; loss on assistant tokens."""

    def __init__(self, convs: list, seq_len: int, seed: int, pad_id: int = 0):
        if not convs:
            raise DataError("no conversations")
        self.convs, self.seq_len, self.seed, self.pad_id = convs, seq_len, seed, pad_id

    def rows(self, convs, T):
        xs = np.full((len(convs), T), self.pad_id, np.int32)
        ys = np.full((len(convs), T), self.pad_id, np.int32)
        ms = np.zeros((len(convs), T), np.float32)
        for r, (t, m) in enumerate(convs):
            t, m = t[: T + 1], m[: T + 1]
            n = len(t) - 1
            xs[r, :n], ys[r, :n], ms[r, :n] = t[:-1], t[1:], m[1:]
        return xs, ys, ms

    def batch(self, step: int, batch_size: int, rows: slice):
        rng = np.random.default_rng([self.seed, step])
        pick = rng.integers(0, len(self.convs), size=batch_size)[rows]
        return self.rows([self.convs[i] for i in pick], self.seq_len)


def load_chat(path, tok_dir, template: str, val_fraction: float) -> tuple:
    """(train conversations, held-out conversations) as (tokens, mask) pairs."""
    from ..tokenizer import BOS, EOS, PAD

    tok = hf_tokenizer(tok_dir)
    cfg = tokenizer_config(tok_dir)
    specials = {"bos_token": _tok_str(cfg.get("bos_token")) or BOS,
                "eos_token": _tok_str(cfg.get("eos_token")) or EOS,
                "pad_token": _tok_str(cfg.get("pad_token")) or PAD}
    paths = list(path) if isinstance(path, (list, tuple, dict)) else [path]
    train, val = [], []
    for p in paths:
        convs = []
        for i, r in _jsonl_rows(Path(p)):
            msgs = r.get("messages")
            if not isinstance(msgs, list) or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str)
                    and isinstance(m.get("content"), str) for m in msgs):
                raise DataError(f"{p}:{i}: 'messages' must be a list of {{role, content}} "
                                "strings")
            convs.append(encode_chat(tok, template, msgs, specials))
        n_val = max(1, int(round(len(convs) * val_fraction))) if len(convs) > 1 else 0
        train += convs[: len(convs) - n_val]
        val += convs[len(convs) - n_val:]
    return train, val


def _tok_str(t):
    return t.get("content") if isinstance(t, dict) else t
