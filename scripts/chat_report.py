"""How well a chat model does the generated tasks: exact match on fresh arithmetic (with and
without the system rule "Reply with only the final number."), whether each answer stops at the
end of its turn, and greedy transcripts of a few prompts. JSON to stdout.

    python scripts/chat_report.py --model mlx_mobilemoe/default_model \
        --arithmetic data-cache/chat/arithmetic-test.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = ["Hello, who are you?", "Define: harbor", "What is 12 + 30?",
           "Continue this verse: In the beginning God created",
           "Complete this Python function:\ndef square(x):\n    \"\"\"Return x times x.\"\"\"",
           "Continue this speech:\nROMEO:\nBut, soft! what light through yonder window breaks?"]
NUMBER_ONLY = "Reply with only the final number."


def final_number(text: str):
    nums = re.findall(r"-?\d+", text)
    return nums[-1] if nums else None


def chat(model, tok, messages, max_tokens):
    """(answer text, stopped at end of turn) for a greedy reply."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    text, reason = "", None
    for r in stream_generate(model, tok, ids, max_tokens=max_tokens,
                             sampler=make_sampler(0.0)):
        text += r.text
        reason = r.finish_reason
    return text.strip(), reason == "stop"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    p.add_argument("--arithmetic", required=True, help="arithmetic-test.jsonl")
    p.add_argument("--n", type=int, default=200, help="problems to score")
    p.add_argument("--max-tokens", type=int, default=48)
    a = p.parse_args(argv)

    from mlx_mobilemoe import load

    model, tok = load(a.model)
    rows = [json.loads(x) for x in Path(a.arithmetic).read_text().splitlines()][: a.n]
    t0, out = time.time(), {"model": a.model or "bundled", "problems": len(rows)}
    for name, system in (("plain", None), ("number_only", NUMBER_ONLY)):
        right = stopped = 0
        for i, r in enumerate(rows):
            msgs = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": r["prompt"]}]
            text, stop = chat(model, tok, msgs, a.max_tokens)
            right += final_number(text) == r["answer"]
            stopped += stop
            if system:  # the rule: nothing but the number
                right -= final_number(text) == r["answer"] and text != r["answer"]
            if (i + 1) % 50 == 0:
                el = time.time() - t0
                print(f"{name} {i + 1}/{len(rows)} ({(i + 1) / el:.1f}/s)", file=sys.stderr)
        out[f"arithmetic_exact_{name}"] = right / len(rows)
        out[f"stopped_at_end_of_turn_{name}"] = stopped / len(rows)
    out["transcripts"] = [{"prompt": q, "answer": chat(model, tok, [
        {"role": "user", "content": q}], 80)[0]} for q in PROMPTS]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
