"""The on-device planner (mlx_mobilemoe/plan.py): shapes, parameter counts, memory, the law."""

import numpy as np
import pytest

from mlx_mobilemoe import plan
from mlx_mobilemoe.config import ConfigError, preset


def test_presets_are_family_shapes():
    for name in ("S", "M", "L"):
        s = plan.PRESET_SHAPES[name]
        assert (s.E, s.g, s.shared) == (8, 8, True)
        assert s.args().to_dict() == preset(name).to_dict()


@pytest.mark.parametrize("name,active,total", [("S", 272.5e6, 1.263e9), ("L", 921.7e6, 5.326e9)])
def test_param_counts_match_the_paper(name, active, total):
    m = plan.measures(plan.PRESET_SHAPES[name].args(), 4096)
    assert abs(m["active_params"] / active - 1) < 0.01
    assert abs(m["total_params"] / total - 1) < 0.01


def test_s_qat_memory_proxy():
    """Weights at 4.5 bits vs the released S-QAT file (0.714 GB), plus the int8 KV cache."""
    C = 8192
    m = plan.measures(plan.PRESET_SHAPES["S"].args(), C, overhead_gb=0.0)
    kv = 2 * 20 * 4 * 64 * C * (1 + 4 / 64) / 1e9  # K and V, int8 + fp16 scale/bias per 64
    assert abs(m["kv_gb"] - kv) < 1e-9
    assert abs(m["memory_gb"] / (0.714 + kv) - 1) < 0.05


def test_decode_ceiling_and_flops():
    args = plan.PRESET_SHAPES["S"].args()
    m = plan.measures(args, 1, bandwidth_gbs=100.0)
    # PERF.md: S reads ~153 MB per decode token at 4.5 bits/weight
    assert abs(m["decode_read_mb"] - 153.3) < 1.0
    assert m["decode_ceiling_tok_s"] == pytest.approx(100e9 / (m["decode_read_mb"] * 1e6))
    assert m["gflops_per_token"] == pytest.approx(2 * m["active_params"] / 1e9, rel=1e-3)


def test_shape_rules():
    assert plan.Shape(4, 128, 1, 1, False).args().num_local_experts == 1
    s = plan.Shape(4, 128, 4, 8, False)
    assert (s.routed, s.k) == (32, 8)
    assert plan.shape_of(s.args()) == s
    for bad in [(4, 128, 1, 2, False), (4, 128, 8, 1, True), (4, 100, 8, 8, True)]:
        with pytest.raises(ConfigError):
            plan.Shape(*bad)


def test_plan_filters_by_memory_and_ranks_by_law():
    law = {"constants": dict(A=30.0, alpha=-0.25, gamma=-0.01, delta=0.05, B=200.0, beta=-0.3,
                             zeta=0.01, omega=-0.05, c=1.5, e_max=64.0)}
    rows = plan.plan(1.2, 2048, law=law, candidates=list(plan.shapes(layers=(20,),
                                                                       widths=(768,))))
    assert rows and all(r["memory_gb"] <= 1.2 for r in rows)
    losses = [r["predicted_loss"] for r in rows]
    assert losses == sorted(losses)
    assert "S" in {r["preset"] for r in rows}


def test_e_hat_and_fit_recovers_known_constants():
    assert plan.e_hat(1, 64.0) == pytest.approx(1.0)
    assert plan.e_hat(1e9, 64.0) == pytest.approx(64.0, rel=1e-6)
    c = dict(A=30.0, alpha=-0.25, gamma=-0.01, delta=0.05, B=200.0, beta=-0.3, zeta=0.01,
             omega=-0.05, c=1.5, e_max=64.0)
    N = np.repeat([1e6, 3e6, 1e7], 15)
    D = np.tile(np.repeat([1e6, 3e6, 1e7], 5), 3)
    E = np.tile([1, 2, 4, 8, 16], 9)
    y = plan.law_loss(N, D, E, c)
    f = plan.fit_law(N, D, E, y, starts=6)
    assert f["rmse"] < 5e-3
    grid = dict(N=[2e6, 2e7], D=[5e6, 5e7], E=[1, 8])
    for n in grid["N"]:
        for d in grid["D"]:
            for e in grid["E"]:
                assert plan.law_loss(n, d, e, f) == pytest.approx(plan.law_loss(n, d, e, c),
                                                                   rel=0.02)


def test_cli(capsys):
    assert plan.main(["--memory-gb", "1.1", "--context", "1024", "--bandwidth-gbs", "60",
                      "--top", "3", "--law", "/nonexistent.json"]) == 0
    out = capsys.readouterr().out
    assert "decode tok/s ceiling" in out and out.count("\n| ") >= 4
    assert plan.main(["--memory-gb", "0.01", "--context", "1024"]) == 1
