"""Writes the Swift sampler's reference distributions (MobileMoEKit `Sampler` parity).

For fixed logits and a table of settings, the probabilities mlx-lm's sampler draws from:
logits processors (repetition / presence / frequency penalties over the last tokens), then
log-softmax, then ``apply_top_p`` / ``apply_min_p`` / ``apply_top_k`` as ``make_sampler`` chains
them, then ``softmax(logprobs / temp)`` (what ``categorical_sampling`` draws from). The Swift
test compares its kept set and probabilities with these. Deterministic; no network.

    python scripts/write_swift_sampler_fixtures.py
"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, make_logits_processors

OUT = Path(__file__).resolve().parents[1] / "swift/MobileMoEKit/Tests/MobileMoEKitTests/Fixtures/sampler-cases.json"

VOCAB = 1000
HISTORY = [3, 17, 17, 250, 999, 3, 42, 7, 7, 7]

SETTINGS = [
    dict(temp=1.0),
    dict(temp=0.6),
    dict(temp=0.7, top_p=0.9),
    dict(temp=1.0, top_p=0.5),
    dict(temp=0.8, top_k=40),
    dict(temp=1.3, top_k=5),
    dict(temp=1.0, min_p=0.05),
    dict(temp=0.6, min_p=0.2),
    dict(temp=0.9, top_p=0.95, top_k=20),
    dict(temp=0.7, top_p=0.8, min_p=0.1, top_k=50),
    dict(temp=1.0, repetition_penalty=1.3),
    dict(temp=0.8, top_k=30, presence_penalty=0.7, frequency_penalty=0.3),
    dict(temp=0.5, top_p=0.9, repetition_penalty=1.1, repetition_context_size=4),
]


def logits_table():
    rng = np.random.default_rng(20261201)
    # A peaked head, a long tail, some exact ties and very negative values, like LM logits.
    x = rng.normal(0.0, 2.0, VOCAB).astype(np.float32)
    x[:8] += np.array([9.0, 8.5, 8.5, 7.0, 6.0, 6.0, 5.5, 4.0], dtype=np.float32)
    x[500:510] = -60.0
    return np.round(x, 4).astype(np.float32)


def distribution(logits, s):
    x = mx.array(logits)[None]
    processors = make_logits_processors(
        repetition_penalty=s.get("repetition_penalty"),
        repetition_context_size=s.get("repetition_context_size", 20),
        presence_penalty=s.get("presence_penalty"),
        frequency_penalty=s.get("frequency_penalty"),
    )
    for p in processors:
        x = p(mx.array(HISTORY), x)
    x = x - mx.logsumexp(x, keepdims=True)
    if 0 < s.get("top_p", 0) < 1:
        x = apply_top_p(x, s["top_p"])
    if s.get("min_p", 0) != 0:
        x = apply_min_p(x, s["min_p"])
    if s.get("top_k", 0) > 0:
        x = apply_top_k(x, s["top_k"])
    p = mx.softmax(x * (1.0 / s["temp"]), axis=-1)[0]
    p = np.array(p, dtype=np.float64)
    kept = np.nonzero(p > 0)[0]
    return [int(i) for i in kept], [float(p[i]) for i in kept]


def main():
    logits = logits_table()
    cases = []
    for s in SETTINGS:
        ids, probs = distribution(logits, s)
        cases.append(dict(settings=s, kept=ids, probabilities=probs))
    OUT.write_text(json.dumps(dict(logits=[float(v) for v in logits], history=HISTORY, cases=cases)) + "\n")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
