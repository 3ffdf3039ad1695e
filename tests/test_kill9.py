"""CI-sized kill -9 loop (scripts/kill9_train.py; the 30-kill run is quoted in
docs/training.md): two SIGKILLs of a tiny training run, each restart resumes, nothing lost."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kill9_loop_resumes_and_loses_nothing(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "kill9_train.py"), "--kills",
                        "2", "--steps", "16", "--save-every", "2", "--seed", "1",
                        "--no-reference", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.stdout.strip(), r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ok"], report
    assert r.returncode == 0
    assert report["unreadable"] == report["missing_tokenizer"] == 0
    assert report["kills"] == 2 and report["rounds"] >= 1 and report["max_steps_lost"] <= 2
