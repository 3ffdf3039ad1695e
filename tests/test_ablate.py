"""scripts/ablate.py on tiny corpora: prepare token files, train two tiny variants for a few
steps, and report (table; too few points for the law)."""

import importlib.util
import json
from pathlib import Path

from conftest import CORPUS

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("ablate", ROOT / "scripts" / "ablate.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def test_ablate_tiny(tmp_path, capsys):
    ab = _script()
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    for d in ab.DOMAINS:
        (corpora / f"{d}.txt").write_text(CORPUS * 3)
    data = tmp_path / "data"
    assert ab.main(["prepare", "--out", str(data), "--data-dir", str(corpora)]) == 0
    assert sorted(p.name for p in (data / "tokens").iterdir()) == sorted(
        f"{d}.tokens" for d in ab.DOMAINS)
    out = tmp_path / "runs"
    assert ab.main(["run", "--data", str(data), "--out", str(out), "--sizes", "tiny",
                    "--steps", "2", "--batch", "2", "--seq-len", "16", "--evals", "2",
                    "--eval-batches", "1", "--max-variants", "2", "--no-compile"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in res["runs"]] == ["tiny-E1-g1-noshared", "tiny-E8-g8-shared"]
    dense, moe = res["runs"]
    assert dense["tokens"] == moe["tokens"] == 2 * 2 * 16
    assert abs(moe["active_non_embedding"] / dense["active_non_embedding"] - 1) < 0.1
    assert moe["curve"][-1]["tokens"] == moe["tokens"] and moe["total"] > 2 * dense["total"]
    assert ab.main(["report", str(out / "results.json")]) == 0
    assert "| tiny-E8-g8-shared | 8 | 8 | yes | 4 / 60 |" in capsys.readouterr().out
