"""Evaluate a MobileMoE checkpoint offline: held-out perplexity per domain and small tasks.

    python -m mlx_mobilemoe.evaluate --model X [--tasks ppl builtin ...] [--data FILE ...]
                                     [--max-tokens 32768] [--limit 200] [--json out.json]

Tasks (--tasks, any mix; default: ppl builtin):
  ppl            perplexity of each --data file (text, a folder of text, or {"text"} jsonl):
                 its held-out split (the last --held-out of the file by bytes, cut at a line
                 boundary, as training splits it; --held-out 0 scores the whole file),
                 tokenized as training does, scored in windows of --seq-len by the training
                 eval's masked cross-entropy (train.loop.masked_nll)
  builtin        the four tasks below, generated (seeded) from the corpora's held-out splits
  arithmetic     exact match: greedy answers to generated problems (answers computed here)
  definitions    multiple choice: a gcide headword line, its definition among 4
  verse          multiple choice: the second half of a King James verse among 4
  code           multiple choice: the next line of standard-library Python among 4
  FILE.jsonl     your own task: rows {"context", "choices", "answer": index} (multiple choice,
                 each choice scored by its summed log-likelihood after the context; acc and
                 acc_norm, the latter per byte of the choice) or {"prompt", "answer": text}
                 (exact match of the greedy continuation's first line, stripped)
  lm-eval:NAME   an lm-evaluation-harness task through mlx-lm's bridge (needs `pip install
                 lm-eval` and the task's dataset already in the local Hugging Face cache)
Prints a table per task and writes everything as JSON (--json, or stdout with --json -).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np

from .train import data as D
from .train.loop import masked_nll


def _find_data_dir() -> Path:
    """The project's corpora: shared/data in, beside or two levels above the checkout."""
    root = Path(__file__).resolve().parents[1]
    for d in (root, root.parent, root.parent.parent):
        if (d / "shared" / "data").is_dir():
            return d / "shared" / "data"
    return root.parent / "shared" / "data"


DATA_DIR = _find_data_dir()
CORPORA = ("tinyshakespeare.txt", "kjv.txt", "python-stdlib.txt", "gcide.txt")
BUILTIN = ("arithmetic", "definitions", "verse", "code")


class EvalError(ValueError):
    """An evaluation we cannot run (missing data, a malformed task file, ...)."""


def _progress(msg: str, quiet: bool = False):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# --- perplexity ------------------------------------------------------------------------------

def heldout_docs(path, held_out: float = 0.05) -> list:
    """The documents of `path` that training holds out (all of them with held_out=0)."""
    path = Path(path)
    if not path.exists():
        raise EvalError(f"{path}: no such file or folder")
    if D.source_kind(path) == "chat":
        raise EvalError(f"{path}: chat data ({{'messages'}}) has no plain text to score")
    if path.is_file() and path.suffix != ".jsonl":  # decode only what is scored
        data = path.read_bytes()
        part = D.split_bytes(data, held_out)[1] if held_out > 0 else data
        try:
            return [part.decode("utf-8")] if part else []
        except UnicodeDecodeError as e:
            raise EvalError(f"{path}: the scored part is not UTF-8 text ({e})") from None
    if held_out <= 0:
        train, val = D.documents(path, 0.0)
        return train + val
    return D.documents(path, held_out)[1]


def doc_tokens(tok, docs: list, eos: Optional[int]) -> np.ndarray:
    """Documents tokenized as training tokenizes them, each followed by end-of-text."""
    hf = tok._tokenizer.backend_tokenizer if hasattr(tok, "_tokenizer") else tok
    parts = []
    for d in docs:
        parts.append(D.encode_text(hf, d))
        if eos is not None:
            parts.append(np.array([eos]))
    return np.concatenate(parts) if parts else np.zeros((0,), np.int64)


def perplexity(model, tokens: np.ndarray, seq_len: int = 512, batch: int = 8,
               max_tokens: Optional[int] = None) -> dict:
    """Mean next-token loss over consecutive windows covering `tokens` once (the first
    `max_tokens` predictions only, when given), each window scored from its own start."""
    tokens = np.asarray(tokens)
    if max_tokens:
        tokens = tokens[: max_tokens + 1]
    if len(tokens) < 2:
        raise EvalError("fewer than 2 tokens to score")
    ce = n = 0.0
    for x, y, m in D.eval_windows(tokens, seq_len, batch):
        c, k = masked_nll(model, mx.array(x), mx.array(y), mx.array(m))
        mx.eval(c, k)
        ce, n = ce + c.item(), n + k.item()
    return {"loss": ce / n, "ppl": math.exp(min(ce / n, 50)), "tokens": int(n)}


def eos_of(tok, folder=None) -> Optional[int]:
    """The end-of-text id training appends to documents (from the tokenizer folder)."""
    if folder is not None:
        try:
            return D.eos_id(Path(folder))
        except D.DataError:
            pass
    ids = getattr(tok, "eos_token_ids", None)
    return min(ids) if ids else getattr(tok, "eos_token_id", None)


def perplexity_domains(model, tok, files, seq_len=512, max_tokens=None, held_out=0.05,
                       batch=8, quiet=False, eos=None) -> dict:
    """{domain: {loss, ppl, tokens}, ..., "overall": token-weighted}."""
    out, tot_ce, tot_n = {}, 0.0, 0
    for f in files:
        name = Path(f).stem
        t0 = time.time()
        toks = doc_tokens(tok, heldout_docs(f, held_out), eos if eos is not None else eos_of(tok))
        r = perplexity(model, toks, seq_len, batch, max_tokens)
        r["seconds"] = round(time.time() - t0, 1)
        out[name] = r
        tot_ce, tot_n = tot_ce + r["loss"] * r["tokens"], tot_n + r["tokens"]
        _progress(f"  ppl {name}: {r['ppl']:.3f} over {r['tokens']} tokens "
                  f"({r['seconds']}s)", quiet)
    if tot_n:
        out["overall"] = {"loss": tot_ce / tot_n, "ppl": math.exp(min(tot_ce / tot_n, 50)),
                          "tokens": tot_n}
    return out


# --- tasks -----------------------------------------------------------------------------------

@dataclass
class Task:
    name: str
    kind: str  # "mc" or "em"
    rows: list = field(default_factory=list)
    source: str = ""


def read_task(path) -> Task:
    path = Path(path)
    rows = D.read_jsonl(path) if path.exists() else None
    if not rows:
        raise EvalError(f"{path}: no such task file, or it has no rows")
    mc = {"context", "choices", "answer"}
    em = {"prompt", "answer"}
    kind = "mc" if mc <= rows[0].keys() else "em" if em <= rows[0].keys() else None
    if kind is None:
        raise EvalError(f"{path}:1: a row needs context/choices/answer (multiple choice) or "
                        "prompt/answer (exact match)")
    for i, r in enumerate(rows):
        need = mc if kind == "mc" else em
        if not need <= r.keys():
            raise EvalError(f"{path}:{i + 1}: missing {sorted(need - r.keys())}")
        if kind == "mc" and not (isinstance(r["choices"], list) and len(r["choices"]) >= 2
                                 and isinstance(r["answer"], int)
                                 and 0 <= r["answer"] < len(r["choices"])):
            raise EvalError(f"{path}:{i + 1}: choices must be a list of >= 2 strings and "
                            "answer an index into it")
    return Task(path.stem, kind, rows, str(path))


def choice_logliks(model, tok, context: str, choices: list) -> list:
    """Summed log-likelihood of each choice's tokens after the context. The text is encoded
    whole and the choice's tokens are those after the common prefix with the context's."""
    ctx = tok.encode(context, add_special_tokens=False)
    out = []
    for c in choices:
        whole = tok.encode(context + c, add_special_tokens=False)
        n = 0
        while n < min(len(ctx), len(whole)) and ctx[n] == whole[n]:
            n += 1
        n = max(1, min(n, len(whole) - 1))  # at least one scored token, one context token
        x = mx.array([whole[:-1]])
        y = mx.array([whole[1:]])
        m = mx.array([[0.0] * (n - 1) + [1.0] * (len(whole) - n)])
        nll, _ = masked_nll(model, x, y, m)
        out.append(-nll.item())
    return out


def run_mc(model, tok, task: Task, limit: Optional[int] = None) -> dict:
    correct = correct_norm = 0
    rows = task.rows[:limit] if limit else task.rows
    for r in rows:
        ll = choice_logliks(model, tok, r["context"], r["choices"])
        norm = [v / max(1, len(c.encode())) for v, c in zip(ll, r["choices"])]
        correct += int(np.argmax(ll)) == r["answer"]
        correct_norm += int(np.argmax(norm)) == r["answer"]
    n = len(rows)
    chance = float(np.mean([1 / len(r["choices"]) for r in rows]))
    return {"kind": "multiple choice", "n": n, "acc": correct / n,
            "acc_norm": correct_norm / n, "chance": chance}


def greedy(model, tok, prompt: str, max_new: int) -> str:
    """Greedy continuation of `prompt`, cut at the first newline."""
    from mlx_lm.generate import generate_step

    ids = mx.array(tok.encode(prompt, add_special_tokens=False))
    eos = set(getattr(tok, "eos_token_ids", None) or [])
    out = []
    for t, _ in generate_step(ids, model, max_tokens=max_new,
                              sampler=lambda lp: mx.argmax(lp, axis=-1)):
        t = int(t)
        if t in eos:
            break
        out.append(t)
        if "\n" in tok.decode(out):
            break
    return tok.decode(out).split("\n")[0]


def run_em(model, tok, task: Task, limit: Optional[int] = None, max_new: int = 16) -> dict:
    rows = task.rows[:limit] if limit else task.rows
    hits, examples = 0, []
    for r in rows:
        got = greedy(model, tok, r["prompt"], max_new).strip()
        ok = got == str(r["answer"]).strip()
        hits += ok
        if len(examples) < 3:
            examples.append({"prompt": r["prompt"], "answer": r["answer"], "got": got})
    return {"kind": "exact match", "n": len(rows), "acc": hits / len(rows),
            "examples": examples}


# --- built-in tasks, generated from the corpora's held-out splits ----------------------------

def arithmetic_expression(rng: random.Random) -> tuple:
    """(expression, value): +, -, * or / in the surface forms of the default model's arithmetic
    data (scripts/train_default_data.py); scripts/make_chat_data.py asks the same problems."""
    kind = rng.random()
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    if kind < 0.3:
        return f"{a} + {b}", a + b
    if kind < 0.55:
        a, b = max(a, b), min(a, b)
        return f"{a} - {b}", a - b
    if kind < 0.75:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        return f"{a} * {b}", a * b
    b, q = rng.randint(1, 30), rng.randint(0, 40)
    return f"{b * q} / {b}", q


def arithmetic_task(n: int = 200, seed: int = 0) -> Task:
    """Problems in the surface forms of the default model's arithmetic data
    (scripts/train_default_data.py), answers computed here; a fresh seed, although small
    operands can repeat training lines."""
    rng = random.Random(1_000_003 + seed)
    rows = []
    for _ in range(n):
        expr, ans = arithmetic_expression(rng)
        rows.append({"prompt": f"{expr} =", "answer": str(ans)})
    return Task("arithmetic", "em", rows, "generated")


def _mc_rows(items: list, n: int, rng: random.Random, k: int = 4) -> list:
    """items: (context, true continuation); distractors are other items' continuations."""
    pick = rng.sample(range(len(items)), min(n, len(items)))
    rows = []
    for i in pick:
        ctx, truth = items[i]
        others = set()
        while len(others) < k - 1:
            j = rng.randrange(len(items))
            if items[j][1] != truth:
                others.add(items[j][1])
        choices = sorted(others) + [truth]
        rng.shuffle(choices)
        rows.append({"context": ctx, "choices": choices, "answer": choices.index(truth)})
    return rows


def definitions_task(gcide, n=200, seed=0, held_out=0.05) -> Task:
    """`Headword \\Pron\\, pos. ...` then its definition's first line, among 4."""
    lines = "".join(heldout_docs(gcide, held_out)).splitlines()
    items = []
    for head, nxt in zip(lines, lines[1:]):
        if (head[:1].isalpha() and "\\" in head and head.count("[") == head.count("]")
                and nxt.startswith("   ") and not nxt.startswith("    ")):
            d = nxt.strip()
            if len(d) >= 15 and d[0].isalpha():
                items.append((head + "\n   ", d))
    if len(items) < 8:
        raise EvalError(f"{gcide}: found {len(items)} dictionary entries, too few for a task")
    return Task("definitions", "mc", _mc_rows(items, n, random.Random(seed)), str(gcide))


def verse_task(kjv, n=200, seed=0, held_out=0.05) -> Task:
    """The previous verse and the first half of a verse; its second half among 4."""
    verses = [v for v in "".join(heldout_docs(kjv, held_out)).splitlines() if v.strip()]
    items = []
    for prev, v in zip(verses, verses[1:]):
        w = v.split(" ")
        if len(w) >= 8:
            h = len(w) // 2
            items.append((prev + "\n" + " ".join(w[:h]), " " + " ".join(w[h:])))
    if len(items) < 8:
        raise EvalError(f"{kjv}: too few verses for a task")
    return Task("verse", "mc", _mc_rows(items, n, random.Random(seed)), str(kjv))


def code_task(stdlib, n=200, seed=0, held_out=0.05, window=8) -> Task:
    """Eight lines of standard-library code; the next line among 4."""
    lines = "".join(heldout_docs(stdlib, held_out)).split("\n")
    items = []
    for i in range(window, len(lines)):
        s = lines[i].strip()
        if len(s) >= 20 and not s.startswith(("#", '"""', "'''")):
            items.append(("\n".join(lines[i - window:i]) + "\n", lines[i]))
    if len(items) < 8:
        raise EvalError(f"{stdlib}: too few code lines for a task")
    return Task("code", "mc", _mc_rows(items, n, random.Random(seed)), str(stdlib))


def builtin_task(name: str, data_dir=DATA_DIR, n=200, seed=0) -> Task:
    data_dir = Path(data_dir)
    need = {"definitions": "gcide.txt", "verse": "kjv.txt", "code": "python-stdlib.txt"}
    if name == "arithmetic":
        return arithmetic_task(n, seed)
    f = data_dir / need[name]
    if not f.exists():
        raise EvalError(f"the built-in task {name!r} is generated from {f}, which is missing "
                        "(pass --data-dir with the project's corpora)")
    return {"definitions": definitions_task, "verse": verse_task, "code": code_task}[name](
        f, n, seed)


# --- lm-evaluation-harness -------------------------------------------------------------------

def run_lm_eval(model, tok, names: list, limit=None, batch=8, num_shots=None,
                seed=0) -> dict:
    """lm-evaluation-harness tasks scored through mlx-lm's LM bridge (its MLXLM, given our
    model instead of loading one). Datasets come from the local Hugging Face cache."""
    try:
        import lm_eval
        from lm_eval.api.model import LM
        from mlx_lm.evaluate import MLXLM
    except ImportError:
        raise EvalError("lm-eval tasks need lm-evaluation-harness: `pip install lm-eval`, "
                        "with each task's dataset already in the local Hugging Face cache "
                        "(HF_DATASETS_OFFLINE=1 keeps it from downloading)") from None
    lm = MLXLM.__new__(MLXLM)
    LM.__init__(lm)
    lm._model, lm.tokenizer = model, tok
    lm._max_tokens, lm._batch_size, lm._sampler = None, batch, None
    lm.use_chat_template = False
    res = lm_eval.simple_evaluate(model=lm, tasks=names, limit=limit, num_fewshot=num_shots,
                                  random_seed=seed, numpy_random_seed=seed,
                                  torch_random_seed=seed, fewshot_random_seed=seed)
    return {k: dict(v, kind="lm-eval") for k, v in res["results"].items()}


# --- the whole evaluation --------------------------------------------------------------------

def evaluate(model, tok, tasks=("ppl", "builtin"), data=None, data_dir=DATA_DIR,
             seq_len=512, max_tokens: Optional[int] = 32768, held_out=0.05, limit=200,
             seed=0, batch=8, quiet=False, eos=None) -> dict:
    model.eval()
    seq_len = min(seq_len, model.args.max_position_embeddings)
    res = {"settings": {"seq_len": seq_len, "max_tokens_per_domain": max_tokens,
                        "held_out_fraction": held_out, "limit": limit, "seed": seed},
           "perplexity": {}, "tasks": {}}
    names = []
    for t in tasks:
        names += list(BUILTIN) if t == "builtin" else [t]
    lm_names = [t.split(":", 1)[1] for t in names if t.startswith("lm-eval:")]
    for t in names:
        t0 = time.time()
        if t == "ppl":
            files = [Path(f) for f in data] if data else [Path(data_dir) / c for c in CORPORA]
            missing = [str(f) for f in files if not f.exists()]
            if missing:
                raise EvalError(f"no such data file(s): {', '.join(missing)} (pass --data)")
            res["perplexity"] = perplexity_domains(model, tok, files, seq_len, max_tokens,
                                                   held_out, batch, quiet, eos)
            continue
        if t.startswith("lm-eval:"):
            continue
        task = builtin_task(t, data_dir, limit, seed) if t in BUILTIN else read_task(t)
        r = run_mc(model, tok, task, limit) if task.kind == "mc" else \
            run_em(model, tok, task, limit)
        r.update(source=task.source, seconds=round(time.time() - t0, 1))
        res["tasks"][task.name] = r
        _progress(f"  {task.name}: acc {r['acc']:.3f} (n={r['n']}, {r['seconds']}s)", quiet)
    if lm_names:
        res["tasks"].update(run_lm_eval(model, tok, lm_names, limit, batch, seed=seed))
    return res


def table(results: dict, label: str = "model") -> str:
    """Markdown: one row per domain / task."""
    rows = [f"| task | metric | {label} |", "|---|---|---:|"]
    for name, r in results.get("perplexity", {}).items():
        rows.append(f"| ppl {name} ({r['tokens']} tok) | perplexity | {r['ppl']:.3f} |")
    for name, r in results.get("tasks", {}).items():
        for k in ("acc", "acc_norm"):
            if k in r:
                rows.append(f"| {name} (n={r.get('n', '?')}) | {k} | {r[k]:.3f} |")
    return "\n".join(rows)


def compare_table(results: dict) -> str:
    """Markdown: rows = domains/tasks, columns = models ({label: evaluate() result})."""
    labels = list(results)
    first = results[labels[0]]
    out = ["| task | metric | " + " | ".join(labels) + " |",
           "|---|---|" + "---:|" * len(labels)]
    for name, r in first.get("perplexity", {}).items():
        cells = [f"{results[m]['perplexity'][name]['ppl']:.3f}" for m in labels]
        out.append(f"| {name} ({r['tokens']} tok) | ppl | " + " | ".join(cells) + " |")
    for name, r in first.get("tasks", {}).items():
        for k in ("acc", "acc_norm"):
            if k in r:
                cells = [f"{results[m]['tasks'][name][k]:.3f}" for m in labels]
                out.append(f"| {name} (n={r['n']}) | {k} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    from .checkpoint import load, resolve

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint folder or HF id (default: bundled)")
    p.add_argument("--tasks", nargs="+", default=["ppl", "builtin"])
    p.add_argument("--data", nargs="+", help="files/folders for ppl (default: the corpora)")
    p.add_argument("--data-dir", default=str(DATA_DIR), help="where the corpora are")
    p.add_argument("--held-out", type=float, default=0.05,
                   help="score the last fraction of each --data file (0: all of it)")
    p.add_argument("--max-tokens", type=int, default=32768, help="per domain (0: all)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--limit", type=int, default=200, help="rows per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here ('-': stdout)")
    a = p.parse_args(argv)
    folder = resolve(a.model)
    model, tok = load(folder)
    try:
        res = evaluate(model, tok, a.tasks, a.data, a.data_dir, a.seq_len,
                       a.max_tokens or None, a.held_out, a.limit, a.seed, a.batch,
                       eos=eos_of(tok, folder))
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res["model"] = str(a.model or "bundled default model")
    print(table(res, Path(str(a.model or "default")).name))
    if a.json == "-":
        print(json.dumps(res, indent=2))
    elif a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
