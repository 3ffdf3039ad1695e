"""The Swift sampler's reference distributions still are mlx-lm's.

`swift test` (SamplerTests) compares MobileMoEKit's sampler with probabilities written by
scripts/write_swift_sampler_fixtures.py from mlx-lm's own filters and penalties; if mlx-lm's
sampling changes, this test notices first. Regenerate with
`python scripts/write_swift_sampler_fixtures.py`.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_sampler_fixture_is_current():
    spec = importlib.util.spec_from_file_location("writer", ROOT / "scripts/write_swift_sampler_fixtures.py")
    writer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writer)
    stored = json.loads(writer.OUT.read_text())
    logits = writer.logits_table()
    np.testing.assert_array_equal(np.array(stored["logits"], dtype=np.float32), logits)
    assert stored["history"] == writer.HISTORY
    assert [c["settings"] for c in stored["cases"]] == writer.SETTINGS
    for case in stored["cases"]:
        ids, probs = writer.distribution(logits, case["settings"])
        assert ids == case["kept"], case["settings"]
        np.testing.assert_allclose(probs, case["probabilities"], rtol=1e-6, atol=1e-9)
