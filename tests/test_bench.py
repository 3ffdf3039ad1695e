"""scripts/bench_moe.py runs on a CPU (reference path only, tiny widths) and writes JSON and a
markdown table; timings are not asserted."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_moe", ROOT / "scripts" / "bench_moe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_layer_and_overhead_run_on_cpu(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "layer.json"
    bench.main(["--part", "layer", "--sizes", "tiny", "--tokens", "1", "3", "--layers", "2",
                "--iters", "2", "--out", str(out)])
    res = json.loads(out.read_text())
    assert [(r["size"], r["tokens"]) for r in res["layer"]] == [("tiny", 1), ("tiny", 3)]
    for r in res["layer"]:
        assert r["kernels"] is False and r["ours_us"] > 0 and r["mlx_lm_us"] > 0
        assert r["speedup_vs_mlx_lm"] == r["mlx_lm_us"] / r["ours_us"]
    assert "| tiny | 1 |" in bench.markdown(res)
    out = tmp_path / "overhead.json"
    bench.main(["--part", "overhead", "--sizes", "tiny", "--layers", "2", "--iters", "2",
                "--out", str(out)])
    paths = [r["path"] for r in json.loads(out.read_text())["overhead"]]
    assert paths[:4] == ["ours", "ours (eager)", "reference", "mlx_lm"]
    capsys.readouterr()


def test_bench_model_and_train_tables_run_on_cpu(tmp_path, capsys):
    """The whole-model (load() + generate_step, interleaved rounds) and training-step tables,
    on tiny models (--smoke): the harness runs and the report has every row."""
    bench = _bench()
    out = tmp_path / "model.json"
    bench.main(["--part", "model", "--smoke", "--sizes", "tiny", "--prompts", "12", "20",
                "--decode", "4", "--rounds", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    names = [r["model"] for r in res["model"]]
    assert names[0].startswith("dense 1B") and "glm4_moe" in names[1]
    assert names[2:] == ["ours tiny", "ours tiny, compiled decode step", "ours tiny, plain MLX",
                         "bundled default model, int4 (default path)",
                         "bundled default model, int4, plain MLX"]
    for r in res["model"]:
        assert r["prefill_12"] > 0 and r["prefill_20"] > 0 and r["decode"] > 0
    assert res["model"][0]["decode_vs_dense"] == 1
    text = bench.markdown(res)
    assert "| ours tiny |" in text and "prefill 20 vs dense" in text
    out = tmp_path / "train.json"
    bench.main(["--part", "train", "--smoke", "--sizes", "tiny", "--train-batch", "1",
                "--train-seq", "16", "--train-steps", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["train"]["rows"]
    assert [r["model"] for r in rows] == ["dense 1B (mlx-lm llama)", "ours tiny, dropless",
                                          "ours tiny, drop"]
    assert all(r["tok_s"] > 0 for r in rows)
    capsys.readouterr()
