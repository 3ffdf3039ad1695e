"""Data for the bundled default model: five domains, one tokenizer, token files.

Writes, under --out (default data-cache/default):
  text/arithmetic.txt     generated arithmetic and word problems (seeded, verifiable answers)
  text/gcide.txt          the first --gcide-mb MB of the gcide dictionary (cut at a line end;
                          the whole 40 MB would not fit what the GPU machine is sent)
  tokenizer/              byte-level BPE (tokenizer.json + tokenizer_config.json, no chat
                          template: the base model takes prompts raw)
  tokens/<domain>.tokens  train/held-out token files (held-out = last 5% of each file by
                          bytes, cut at a line boundary), ready for the training CLI

so the GPU machine (no package index, no ../shared) only needs the token files.

python scripts/train_default_data.py --shared ../shared/data --out data-cache/default
"""

from __future__ import annotations

import argparse
import codecs
import json
import random
import shutil
import tempfile
from pathlib import Path

DOMAINS = ["tinyshakespeare", "kjv", "python-stdlib", "gcide", "arithmetic"]
NAMES = ["Tom", "Ann", "Sam", "Lily", "Omar", "Mia", "Ben", "Zoe"]
THINGS = ["apples", "books", "coins", "marbles", "pencils", "cards", "stamps", "shells"]


def arithmetic_text(n_lines: int, seed: int = 0) -> str:
    """Arithmetic expressions and one-step word problems, one per line, with answers."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_lines):
        kind = rng.random()
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        if kind < 0.25:
            out.append(f"{a} + {b} = {a + b}")
        elif kind < 0.45:
            a, b = max(a, b), min(a, b)
            out.append(f"{a} - {b} = {a - b}")
        elif kind < 0.6:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            out.append(f"{a} * {b} = {a * b}")
        elif kind < 0.7:
            b = rng.randint(1, 30)
            q = rng.randint(0, 40)
            out.append(f"{b * q} / {b} = {q}")
        elif kind < 0.8:
            a, b, c = rng.randint(1, 20), rng.randint(1, 20), rng.randint(1, 12)
            out.append(f"({a} + {b}) * {c} = {(a + b) * c}")
        else:
            who, other, th = rng.choice(NAMES), rng.choice(NAMES), rng.choice(THINGS)
            x, y = rng.randint(2, 60), rng.randint(1, 40)
            if rng.random() < 0.5:
                out.append(f"{who} has {x} {th}. {other} gives {who} {y} more. "
                           f"How many {th} does {who} have now? {x + y}")
            else:
                x, y = max(x, y), min(x, y)
                out.append(f"{who} has {x} {th} and gives {y} to {other}. "
                           f"How many {th} does {who} have left? {x - y}")
    return "\n".join(out) + "\n"


def head_lines(path: Path, n_bytes: int) -> bytes:
    """The first `n_bytes` of a file, shortened to end at a line end, as UTF-8.

    gcide.txt is UTF-8 except for three stray Windows-1252 bytes (0x92, a right quote);
    those are read as Windows-1252 so the training text is valid UTF-8."""
    with open(path, "rb") as f:
        data = f.read(n_bytes)
    if len(data) == n_bytes:
        end = data.rfind(b"\n")
        data = data[: end + 1] if end >= 0 else b""
    if not data:
        raise SystemExit(f"{path}: no whole line in the first {n_bytes} bytes")
    return data.decode("utf-8", errors="cp1252_fallback").encode("utf-8")


def _cp1252_fallback(err: UnicodeDecodeError):
    bad = err.object[err.start:err.end]
    return bad.decode("cp1252", errors="replace"), err.end


codecs.register_error("cp1252_fallback", _cp1252_fallback)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--out", default="data-cache/default")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--arith-lines", type=int, default=60000)
    p.add_argument("--gcide-mb", type=float, default=16.0,
                   help="MB of gcide.txt to use (0: leave the dictionary out)")
    p.add_argument("--tokenizer-sample-mb", type=float, default=3.0)
    p.add_argument("--split", default="lines", choices=["llama3", "lines"],
                   help="pre-tokenizer split (mlx_mobilemoe/train/bpe.py)")
    a = p.parse_args(argv)

    from mlx_mobilemoe.train.data import prepare_text
    from mlx_mobilemoe.train.stages import train_base_tokenizer

    out = Path(a.out)
    (out / "text").mkdir(parents=True, exist_ok=True)
    arith = out / "text" / "arithmetic.txt"
    arith.write_text(arithmetic_text(a.arith_lines))
    shared = Path(a.shared)
    sources = {d: shared / f"{d}.txt" for d in DOMAINS[:3]}
    if a.gcide_mb > 0:
        sources["gcide"] = out / "text" / "gcide.txt"
        if not (shared / "gcide.txt").exists():
            raise SystemExit(f"missing {shared / 'gcide.txt'}")
        sources["gcide"].write_bytes(head_lines(shared / "gcide.txt", int(a.gcide_mb * 1e6)))
    sources["arithmetic"] = arith
    for d, f in sources.items():
        if not f.exists():
            raise SystemExit(f"missing {f}")

    tok = out / "tokenizer"
    if tok.exists():
        shutil.rmtree(tok)
    train_base_tokenizer(list(sources.values()), a.vocab_size, tok, 0.05,
                         a.tokenizer_sample_mb, a.split)
    (out / "tokens").mkdir(exist_ok=True)
    summary = {}
    with tempfile.TemporaryDirectory() as cache:
        for d, f in sources.items():
            tf = prepare_text(f, tok, Path(cache), 0.05, name=d)
            dest = out / "tokens" / f"{d}.tokens"
            if dest.exists():
                shutil.rmtree(dest)
            shutil.move(str(tf.path), dest)
            summary[d] = {"bytes": f.stat().st_size, "train_tokens": tf.meta["train_tokens"],
                          "val_tokens": tf.meta["val_tokens"]}
    (out / "data.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
