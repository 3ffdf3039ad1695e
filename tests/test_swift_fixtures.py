"""The Swift package's cross-language fixtures still describe the Python model.

`swift test` checks MobileMoEKit against logits, greedy tokens and tokenizer ids written by
scripts/write_swift_fixtures.py. If the Python forward pass or tokenizer changes, those files go
stale silently on the Swift side; this test notices first. Regenerate with
`python scripts/write_swift_fixtures.py`.
"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_mobilemoe import checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "swift/MobileMoEKit/Tests/MobileMoEKitTests/Fixtures"


@pytest.mark.parametrize("name", ["tiny-qat", "tiny-bf16"])
def test_logits_and_greedy_tokens_are_current(name):
    expected = json.loads((FIXTURES / f"{name}-expected.json").read_text())
    model, tok = checkpoint.load(FIXTURES / name, dtype=mx.float32)
    for case in expected["cases"]:
        ids = case["prompt_ids"]
        assert tok.encode(case["rendered"], add_special_tokens=False) == ids
        logits = np.array(model(mx.array([ids]))[0], dtype=np.float32)
        np.testing.assert_allclose(logits, np.array(case["logits"], dtype=np.float32), rtol=1e-5, atol=1e-5)
        cache = model.make_cache()
        out = model(mx.array([ids]), cache=cache)[0, -1]
        tokens = []
        for _ in case["greedy_tokens"]:
            tokens.append(int(mx.argmax(out).item()))
            out = model(mx.array([[tokens[-1]]]), cache=cache)[0, -1]
        assert tokens == case["greedy_tokens"]


def test_tokenizer_table_is_current():
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(FIXTURES / "tiny-qat" / "tokenizer.json"))
    for case in json.loads((FIXTURES / "tokenizer-cases.json").read_text()):
        assert ref.encode(case["text"]).ids == case["ids"], case["text"]
        assert ref.encode(case["text"], add_special_tokens=False).ids == case["ids_no_special"]
        assert ref.decode(case["ids"], skip_special_tokens=True) == case["decoded"]
    for text, ids in json.loads((FIXTURES / "tokenizer-fuzz.json").read_text()):
        assert ref.encode(text).ids == ids, text
    for name, rows in json.loads((FIXTURES / "tokenizer-spm-cases.json").read_text()).items():
        spm = Tokenizer.from_file(str(FIXTURES / name / "tokenizer.json"))
        for text, ids, decoded, decoded_special in rows:
            assert spm.encode(text).ids == ids, (name, text)
            assert spm.decode(ids) == decoded
            assert spm.decode(ids, skip_special_tokens=False) == decoded_special


def test_default_model_tokenizer_table_is_current():
    """Swift reads the bundled model's tokenizer.json itself; its expected ids must be the
    current tokenizer's (rerun scripts/write_swift_fixtures.py after retraining the model)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(checkpoint.DEFAULT_MODEL / "tokenizer.json"))
    rows = json.loads((FIXTURES / "tokenizer-default-model.json").read_text())
    assert len(rows) > 300 and any(r[0] == "ROMEO:" for r in rows)
    for text, ids, decoded in rows:
        assert tok.encode(text).ids == ids, text
        assert tok.decode(ids) == decoded, text
