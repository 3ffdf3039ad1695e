"""Instruction data for the bundled chat model, generated from our own corpora.

Every answer is taken from (or computed for) the text itself, so it is right by construction:

  define      "Define: harbor"                 -> the dictionary's first sense (GCIDE)
  verse       "Continue this verse: ..."        -> the rest of the King James verse
  code        "Complete this Python function:"  -> the body of a standard-library function
  arithmetic  "What is 37 + 45?"                -> "37 + 45 = 82." (with the system message
              "Reply with only the final number." -> "82": the one system rule it learns)
  play        "Continue this speech: ..."       -> the next line of the Shakespeare speech
  about       "Hello, who are you?"             -> what the model is and what it can do

Train and held-out conversations come from the training and held-out splits of each corpus
(the last 5% by bytes, cut at a line, as for the base model), so held-out answers are unseen.

    python scripts/make_chat_data.py --shared ../shared/data --out data-cache/chat

writes chat.jsonl (`{"messages": [...]}` rows: the training conversations, then the held-out
ones as its last --val-fraction, which is how the sft stage splits a jsonl) and
arithmetic-test.jsonl (fresh problems with their exact answers, for the exact-match check).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlx_mobilemoe.evaluate import arithmetic_expression  # noqa: E402

NUMBER_ONLY = "Reply with only the final number."
ABOUT = ("I am a small MobileMoE chat model (9.7M parameters, 16 experts, 2 active per "
         "token) trained on Shakespeare, the King James Bible, the Python standard library, "
         "a dictionary and arithmetic. Ask me to define a word, continue a verse or a "
         "speech, complete a Python function, or do some arithmetic.")
GREETINGS = ["Hello, who are you?", "Hi! What are you?", "Who are you?", "What can you do?",
             "Hello", "Hi there. What can you help me with?", "Tell me about yourself.",
             "Good morning! Who am I talking to?"]
POS = {"n.": "noun", "v. t.": "verb", "v. i.": "verb", "a.": "adjective", "adv.": "adverb",
       "prep.": "preposition", "conj.": "conjunction", "interj.": "interjection"}
NAMES = ["Tom", "Ann", "Sam", "Lily", "Omar", "Mia", "Ben", "Zoe"]
THINGS = ["apples", "books", "coins", "marbles", "pencils", "cards", "stamps", "shells"]


def split_text(text: str, val_fraction: float = 0.05) -> tuple:
    """(train, held-out): held-out is the last `val_fraction` by bytes, cut at a line."""
    data = text.encode("utf-8")
    cut = data.rfind(b"\n", 0, int(len(data) * (1 - val_fraction))) + 1
    return data[:cut].decode("utf-8"), data[cut:].decode("utf-8")


# --- dictionary -------------------------------------------------------------------------

HEAD = re.compile(r"^([A-Z][A-Za-z'-]+) \\[^\\]+\\[^\n]*?, (n\.|v\. t\.|v\. i\.|a\.|adv\.)")
SENSE = re.compile(r"^   (?:1\. )?([A-Z(][^\[]*)$")


def definitions(text: str) -> list:
    """(word, part of speech, first sense) for dictionary entries whose first sense is plain
    text (no markup left after removing {braces})."""
    out, lines = [], text.split("\n")
    for i, line in enumerate(lines):
        m = HEAD.match(line)
        if not m:
            continue
        sense = None
        for j in range(i + 1, min(i + 30, len(lines))):
            s = lines[j]
            if not s.strip() or HEAD.match(s):
                break
            sm = SENSE.match(s)
            if sm and not s.startswith("   [") and not s.startswith("    "):
                parts = [sm.group(1).strip()]
                for t in lines[j + 1:j + 8]:
                    if not t.startswith("      ") or "[" in t or t.strip().startswith("--"):
                        break
                    parts.append(t.strip())
                sense = " ".join(parts).replace("{", "").replace("}", "")
                sense = re.sub(r" --[A-Z][^.]*\.$", "", sense)  # a trailing citation
                break
        if sense and 15 <= len(sense) <= 240 and "\\" not in sense and sense.endswith("."):
            out.append((m.group(1), POS[m.group(2)], sense))
    return out


def define_chat(rng, entry) -> list:
    word, pos, sense = entry
    ask = rng.choice(["Define: {w}", "Define {w}.", "What does \"{w}\" mean?",
                      "What is the meaning of the word {w}?", "define {w}"])
    return [{"role": "user", "content": ask.format(w=word.lower())},
            {"role": "assistant", "content": f"{word} ({pos}): {sense}"}]


# --- verses, speeches, code -------------------------------------------------------------

def verse_chat(rng, verse: str) -> list:
    words = verse.split()
    cut = rng.randint(len(words) // 3, (2 * len(words)) // 3)
    ask = rng.choice(["Continue this verse: {v}", "Finish the verse: {v}",
                      "How does this verse go on? {v}"])
    return [{"role": "user", "content": ask.format(v=" ".join(words[:cut]))},
            {"role": "assistant", "content": " ".join(words[cut:])}]


def speeches(text: str) -> list:
    """(speaker, first line, next line) from a play: a speaker cue followed by two lines."""
    out, lines = [], text.split("\n")
    for i in range(len(lines) - 2):
        cue, a, b = lines[i], lines[i + 1], lines[i + 2]
        if re.fullmatch(r"[A-Z][A-Za-z ]+:", cue) and a.strip() and b.strip() \
                and not b.endswith(":"):
            out.append((cue[:-1], a.strip(), b.strip()))
    return out


def speech_chat(rng, s) -> list:
    who, first, nxt = s
    ask = rng.choice(["Continue this speech:\n{w}:\n{a}", "What does {w} say next?\n{a}"])
    return [{"role": "user", "content": ask.format(w=who, a=first)},
            {"role": "assistant", "content": nxt}]


def functions(text: str) -> list:
    """(header with docstring, body) of short top-level or method functions whose docstring is
    one line."""
    out, lines = [], text.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"^( *)def \w+\(.*\):$", line)
        if not m or i + 2 >= len(lines):
            continue
        ind = m.group(1) + "    "
        doc = lines[i + 1]
        if not re.fullmatch(ind + r'"""[^"]+"""', doc):
            continue
        body = []
        for t in lines[i + 2:i + 14]:
            if t.strip() and not t.startswith(ind):
                break
            body.append(t)
        while body and not body[-1].strip():
            body.pop()
        if 1 <= len(body) <= 8 and len(lines) > i + 2 + len(body):
            nxt = lines[i + 2 + len(body)]
            if not nxt.strip() or not nxt.startswith(ind):  # the function really ends
                cut = len(m.group(1))
                head = "\n".join(x[cut:] for x in (line, doc))
                out.append((head, "\n".join(x[cut:] for x in body)))
    return out


def code_chat(rng, f) -> list:
    head, body = f
    return [{"role": "user", "content": f"Complete this Python function:\n{head}"},
            {"role": "assistant", "content": body}]


# --- arithmetic -------------------------------------------------------------------------

def arithmetic_problem(rng) -> tuple:
    """(question, full answer, final number): the evaluation's expressions (+, -, *, /) and,
    one time in seven, a one-step word problem."""
    if rng.random() < 0.15:
        who, other, th = rng.choice(NAMES), rng.choice(NAMES), rng.choice(THINGS)
        x, y = rng.randint(2, 60), rng.randint(1, 40)
        q = (f"{who} has {x} {th}. {other} gives {who} {y} more. "
             f"How many {th} does {who} have now?")
        return q, f"{x} + {y} = {x + y}. {who} has {x + y} {th}.", x + y
    expr, val = arithmetic_expression(rng)
    ask = rng.choice(["What is {e}?", "Compute {e}.", "{e} = ?", "Calculate {e}"])
    return ask.format(e=expr), f"{expr} = {val}.", val


def arithmetic_chat(rng, system: bool = True) -> list:
    q, full, val = arithmetic_problem(rng)
    if system and rng.random() < 0.3:
        return [{"role": "system", "content": NUMBER_ONLY}, {"role": "user", "content": q},
                {"role": "assistant", "content": str(val)}]
    return [{"role": "user", "content": q}, {"role": "assistant", "content": full}]


def about_chat(rng) -> list:
    return [{"role": "user", "content": rng.choice(GREETINGS)},
            {"role": "assistant", "content": ABOUT}]


# --- assembly ---------------------------------------------------------------------------

MIX = {"define": 0.3, "verse": 0.15, "play": 0.1, "code": 0.15, "arithmetic": 0.27,
       "about": 0.03}


def conversations(pools: dict, n: int, seed: int) -> list:
    """n conversations; one in eight has two turns (two tasks in a row)."""
    rng = random.Random(seed)
    kinds, weights = zip(*MIX.items())

    def one(first=True):
        k = rng.choices(kinds, weights)[0]
        if k == "arithmetic":
            return arithmetic_chat(rng, system=first)
        if k == "about":
            return about_chat(rng)
        make = {"define": define_chat, "verse": verse_chat, "play": speech_chat,
                "code": code_chat}[k]
        return make(rng, rng.choice(pools[k]))

    rows = []
    for _ in range(n):
        msgs = one()
        if rng.random() < 0.125:
            msgs = msgs + one(first=False)
        rows.append({"messages": msgs})
    return rows


def pools_of(shared: Path, gcide_mb: float) -> tuple:
    """(train pools, held-out pools) per task."""
    def read(name, limit=None):
        raw = (shared / name).read_bytes()
        if limit:
            raw = raw[:raw.rfind(b"\n", 0, limit) + 1]
        return raw.decode("utf-8", errors="replace")

    parts = {"define": split_text(read("gcide.txt", int(gcide_mb * 1e6))),
             "verse": split_text(read("kjv.txt")),
             "play": split_text(read("tinyshakespeare.txt")),
             "code": split_text(read("python-stdlib.txt"))}
    extract = {"define": definitions,
               "verse": lambda t: [v for v in t.split("\n") if 10 <= len(v.split()) <= 40],
               "play": speeches, "code": functions}
    train = {k: extract[k](parts[k][0]) for k in parts}
    held = {k: extract[k](parts[k][1]) for k in parts}
    for k in parts:
        if not train[k] or not held[k]:
            raise SystemExit(f"no {k} examples found in the corpus")
    return train, held


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default="../shared/data", help="folder with the corpora")
    p.add_argument("--out", default="data-cache/chat")
    p.add_argument("--rows", type=int, default=60000, help="conversations in chat.jsonl")
    p.add_argument("--val-fraction", type=float, default=0.05,
                   help="held-out share (the sft stage's val_fraction must match)")
    p.add_argument("--arith-test", type=int, default=200, help="exact-match problems")
    p.add_argument("--gcide-mb", type=float, default=16.0,
                   help="MB of gcide.txt the base model was trained on (its split)")
    a = p.parse_args(argv)
    train, held = pools_of(Path(a.shared), a.gcide_mb)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    n_val = max(1, int(round(a.rows * a.val_fraction)))
    files = {"chat.jsonl": conversations(train, a.rows - n_val, seed=0)
             + conversations(held, n_val, seed=1)}
    rng = random.Random(2)
    test = []
    for _ in range(a.arith_test):
        q, _, val = arithmetic_problem(rng)
        test.append({"prompt": q, "answer": str(val)})
    files["arithmetic-test.jsonl"] = test
    for name, rows in files.items():
        with open(out / name, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(json.dumps({"pool_sizes": {k: len(v) for k, v in train.items()},
                      "held_out_pool_sizes": {k: len(v) for k, v in held.items()},
                      **{k: len(v) for k, v in files.items()}}, indent=2))


if __name__ == "__main__":
    main()
