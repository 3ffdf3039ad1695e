"""Adaptive experts-per-token: the routing masks, the device policy (equal to Swift's), the
OS readers (injected) and the entropy-gated decode."""

import re
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_mobilemoe import adaptive as A
from mlx_mobilemoe.config import preset
from mlx_mobilemoe.model import Model
from mlx_mobilemoe.moe import adaptive_keep

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "swift/MobileMoEKit/Sources/MobileMoEKit/Policy"
SWIFT_TESTS = ROOT / "swift/MobileMoEKit/Tests/MobileMoEKitTests/PolicyTests.swift"


def _np_keep(w, p=None, tk=None):
    """Plain reading: sort, renormalise, keep until the mass before an expert reaches p."""
    out = np.zeros_like(w)
    for i, row in enumerate(w):
        order = np.argsort(-row, kind="stable")
        r = row[order] / row.sum()
        mass = 0.0
        for rank, j in enumerate(order):
            if (p is None or mass < p) and (tk is None or rank < tk[i]):
                out[i, j] = 1
            mass += r[rank]
    return out


def test_adaptive_keep_matches_plain_reading():
    rng = np.random.default_rng(0)
    w = rng.uniform(0.05, 1, (50, 4)).astype(np.float32)
    tk = rng.integers(1, 5, 50)
    for p, t in ((0.5, None), (0.9, None), (1.0, None), (None, tk), (0.7, tk)):
        got = np.array(adaptive_keep(mx.array(w), p, None if t is None else mx.array(t)))
        assert np.array_equal(got, _np_keep(w, p, t)), (p, t)
    # p small: only the best expert; p = 1: all of them.
    assert np.array(adaptive_keep(mx.array(w), 1e-6)).sum(-1).tolist() == [1] * 50


def test_per_token_modes_route_through_the_one_routing_function():
    mx.random.seed(0)
    m = Model(preset("tiny", num_experts_per_tok=4))
    x = mx.random.randint(0, 320, (2, 9))
    full = m(x)
    A.set_adaptive(m, top_p=1.0)
    assert mx.allclose(m(x), full, atol=1e-5)
    A.set_adaptive(m, token_k=np.full(18, 2))
    m2 = Model(preset("tiny", num_experts_per_tok=4))
    m2.update(m.parameters())
    m2.set_experts_per_token(2)
    assert mx.allclose(m(x), m2(x), atol=1e-5)  # token_k = 2 everywhere == global k = 2
    assert "token_k" not in m.layers[0].feed_forward  # not a parameter
    assert "per-token" in m.layers[0].feed_forward.plan(mx.float16).why  # the dispatcher says
    A.set_adaptive(m)
    assert "per-token" not in m.layers[0].feed_forward.plan(mx.float16).why
    assert mx.allclose(m(x), full)
    m.set_experts_per_token([1, 4])
    assert [lay.feed_forward.num_experts_per_tok for lay in m.layers] == [1, 4]
    with pytest.raises(ValueError):
        m.set_experts_per_token([1])
    with pytest.raises(A.PolicyError):
        A.set_adaptive(m, top_p=0)


def _swift_defaults():
    src = (POLICY / "AdaptiveComputePolicy.swift").read_text()
    out = {}
    for name, val in re.findall(r"public var (\w+): \w+ = ([\d.]+)", src):
        snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)
        out[snake] = float(val)
    return out


def test_policy_defaults_equal_swift():
    py = A.AdaptiveComputePolicy()
    sw = _swift_defaults()
    assert sw and set(sw) == set(vars(py)), (set(sw) ^ set(vars(py)))
    for k, v in sw.items():
        assert getattr(py, k) == pytest.approx(v), k


def test_policy_table_equals_swift_tests():
    """Every row of Swift's PolicyTests table gives the same k here."""
    src = SWIFT_TESTS.read_text()
    rows = re.findall(r"\((\.nominal|DeviceState\([^)]*\)), (\d+), (\d+)\)", src)
    assert len(rows) >= 10
    policy = A.AdaptiveComputePolicy()
    for state, configured, expected in rows:
        kw = {}
        if state != ".nominal":
            for key, val in re.findall(r"(\w+): ([\w.]+)", state):
                kw[{"thermal": "thermal", "lowPowerMode": "low_power_mode",
                    "batteryLevel": "battery_level", "isCharging": "is_charging"}[key]] = (
                    val.lstrip(".") if key == "thermal" else val == "true"
                    if val in ("true", "false") else float(val))
        s = A.DeviceState(**kw)
        assert policy.experts_per_token(int(configured), s) == int(expected), (state, configured)


PMSET_BATT = """Now drawing from 'Battery Power'
 -InternalBattery-0 (id=1234567)	15%; discharging; 1:02 remaining present: true
"""
PMSET_AC = """Now drawing from 'AC Power'
 -InternalBattery-0 (id=1234567)	85%; charging; 0:40 remaining present: true
"""
PMSET = """System-wide power settings:
Currently in use:
 standby              1
 lowpowermode         1
 sleep                1
"""
THERM = """Note: No thermal warning level has been recorded
Note: No performance warning level has been recorded
CPU_Speed_Limit 	= 60
"""


def test_macos_readers_injected():
    cmds = {"batt": PMSET_BATT, "therm": THERM}

    def run(cmd):
        return cmds.get(cmd[-1], PMSET)
    s = A.read_device_state(run=run, platform="darwin")
    assert s == A.DeviceState(thermal="serious", low_power_mode=True, battery_level=0.15,
                              is_charging=False)
    assert A.AdaptiveComputePolicy().experts_per_token(4, s) == 2
    assert A.parse_pmset_batt(PMSET_AC) == (0.85, True)
    assert A.parse_pmset_batt("") == (None, False)
    assert A.parse_pmset_therm("") == "nominal"
    assert A.parse_pmset_lowpower("lowpowermode 0") is False


def test_linux_reader_and_bad_states(tmp_path):
    bat = tmp_path / "BAT0"
    bat.mkdir()
    (bat / "capacity").write_text("8\n")
    (bat / "status").write_text("Discharging\n")
    s = A.read_device_state(platform="linux", sysfs=tmp_path)
    assert s.battery_level == pytest.approx(0.08) and not s.is_charging
    assert A.read_device_state(platform="win32") == A.DeviceState()
    with pytest.raises(A.PolicyError):
        A.DeviceState(thermal="hot")
    with pytest.raises(A.PolicyError):
        A.DeviceState(battery_level=1.5)


def test_entropy_gated_decode_uses_fewer_experts_when_sure():
    mx.random.seed(1)
    m = Model(preset("tiny", num_experts_per_tok=4))
    ent = A.entropy(mx.array([[0.0, 0.0], [100.0, 0.0]]))
    assert ent[0].item() == pytest.approx(np.log(2), rel=1e-5) and ent[1].item() < 1e-6
    dec = A.AdaptiveDecode(gate=A.EntropyGate(low=100.0, k_easy=1),  # always "easy"
                           state=lambda: A.DeviceState())
    toks, ks = dec(m, [2, 3, 4], 5)
    assert ks == [1] * 5 and len(toks) == 5
    # A critical thermal state halves k for every step; the model's k is restored after.
    dec_hot = A.AdaptiveDecode(state=lambda: A.DeviceState(thermal="critical"))
    _, ks2 = dec_hot(m, [2, 3, 4], 3)
    assert ks2 == [2, 2, 2]
    assert m.layers[0].feed_forward.num_experts_per_tok == 4  # restored


def test_adaptive_report_quality_rows_on_a_tiny_model():
    """CPU smoke test of scripts/adaptive_report.py's quality part."""
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    import adaptive_report as R

    mx.random.seed(2)
    m = Model(preset("tiny", num_experts_per_tok=2))
    val = (np.arange(300) * 7 % 320).astype(np.int32)
    rows = R.quality(m, {"a": val}, 32, 1, [mx.array(val[:8])], 4, [1.0], [0.7], bs=4)
    names = [r["setting"] for r in rows]
    assert names == ["k=4", "k=3", "k=2", "k=1", "p=0.7", "entropy<1.0->k=1"]
    base = rows[2]
    assert base["top1_agreement"] == 1.0 and base["greedy_agreement"] == 1.0
    assert base["experts_per_token_layer"] == 2.0 and rows[3]["experts_per_token_layer"] == 1.0
    assert 1.0 <= rows[4]["experts_per_token_layer"] <= 2.0
    assert rows[3]["flops_saving"] > 0 > rows[0]["flops_saving"]
    assert m.layers[0].feed_forward.num_experts_per_tok == 2  # settings undone
    assert m.layers[0].feed_forward.top_p is None
