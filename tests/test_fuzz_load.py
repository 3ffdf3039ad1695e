"""CI-sized run of the loader fuzz harness (scripts/fuzz_load.py): 500 mutated checkpoint
folders through load(verify=True), none may crash, hang or raise anything but the named
errors. The long run (--long, 100,000 cases) is quoted in the README."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_load.py"


def test_fuzz_load_ci_run():
    r = subprocess.run([sys.executable, str(SCRIPT), "--cases", "500", "--seed", "2026",
                        "--timeout", "20"], capture_output=True, text=True, timeout=600)
    summary = json.loads(r.stdout)
    assert summary["cases"] == 500
    assert summary["unexpected"] == summary["hang"] == summary["crash"] == 0, summary
    assert summary["ok"] > 25 and summary["named"] > 250  # both paths are exercised
    assert r.returncode == 0
