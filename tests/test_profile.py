"""mlx_mobilemoe.profile on a tiny model: rows for every context and prompt kind, experts
touched (a repeated token routes to fewer), utilisation shares, the heatmap and the CLI."""

import json

import mlx.core as mx
import numpy as np
import pytest

from conftest import CORPUS, add_tokenizer
from mlx_mobilemoe import profile as P
from mlx_mobilemoe.checkpoint import load, save
from mlx_mobilemoe.config import preset
from mlx_mobilemoe.model import Model


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer_dir):
    mx.random.seed(3)
    d = tmp_path_factory.mktemp("tiny-prof")
    save(Model(preset("tiny")), None, d)
    add_tokenizer(d, tokenizer_dir)
    data = tmp_path_factory.mktemp("prof-data")
    for name in P.DOMAINS[:2]:
        (data / f"{name}.txt").write_text(CORPUS * 3)
    return d, data


def test_profile_rows_and_utilisation(setup):
    d, data = setup
    model, tok = load(d)
    r = P.profile(model, tok, [16, 32], decode=3, data_dir=data, util_tokens=64)
    rows = r["speed_memory"]
    assert [(x["context"], x["prompt"]) for x in rows] == [
        (16, "real"), (16, "dummy"), (32, "real"), (32, "dummy")]
    for x in rows:
        assert x["prefill_tok_s"] > 0 and x["decode_tok_s"] > 0 and x["mlx_peak_gb"] > 0
        e = x["experts"]
        assert 0 < e["pairs_touched"] <= e["pairs_total"] == 2 * 8
    dummy = rows[1]["experts"]["pairs_touched"]
    assert dummy <= 2 * 2  # one token: k = 2 experts per layer
    assert rows[0]["experts"]["pairs_touched"] > dummy
    util = r["utilisation"]
    assert set(util) == set(P.DOMAINS[:2])
    assert np.allclose(np.array(util["kjv"]).sum(1), 1.0)
    with pytest.raises(P.E.EvalError):
        P.profile(model, tok, [512], data_dir=data)


def test_cli_and_heatmap(setup, tmp_path):
    pytest.importorskip("matplotlib")
    d, data = setup
    out, png = tmp_path / "p.json", tmp_path / "h.png"
    assert P.main(["--model", str(d), "--contexts", "16", "--decode", "2", "--data-dir",
                   str(data), "--util-tokens", "32", "--json", str(out), "--heatmap",
                   str(png)]) == 0
    r = json.loads(out.read_text())
    assert r["speed_memory"][0]["context"] == 16 and png.stat().st_size > 1000
