"""Adaptive experts-per-token: how many routed experts a token gets, chosen at inference.

Four knobs, all on the one routing function (`mlx_mobilemoe.moe.route`):
- global k: `model.set_experts_per_token(k)` (an int);
- per layer: `model.set_experts_per_token([k0, k1, ...])`;
- per token by router confidence: `set_adaptive(model, top_p=p)` keeps, of the k selected
  experts, the smallest set whose renormalised weights reach p;
- per token by difficulty: `EntropyGate` picks k for the next token from the entropy of the
  distribution the current token was sampled from (known before the next forward pass, so
  the signal is free). A peaked distribution (the model is sure of the continuation, e.g.
  inside a word or a fixed phrase) gets fewer experts; a flat one the configured k.
  `set_adaptive(model, token_k=...)` applies a per-row k in a batched forward (evaluation).

The per-token modes mask weights on the plain-MLX path (the fused kernels route inside the
kernel and take one k per call; `MoE.plan` sends these modes to the plain-MLX path and says so):
their compute saving is counted (active FLOPs), not realised. Global and per-layer k run the
fused kernels with the smaller k and save real time.

The device policy (battery, Low Power Mode, thermal state -> k) is MobileMoEKit's
`AdaptiveComputePolicy` (swift/.../Policy/AdaptiveComputePolicy.swift) with the same
defaults; tests/test_adaptive.py checks Swift's test table against this one.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import mlx.core as mx

THERMAL = ("nominal", "fair", "serious", "critical")


class PolicyError(ValueError):
    """A device state or policy setting that makes no sense."""


@dataclass(frozen=True)
class DeviceState:
    thermal: str = "nominal"  # one of THERMAL (ProcessInfo.ThermalState)
    low_power_mode: bool = False
    battery_level: Optional[float] = None  # 0..1; None: no battery / unknown
    is_charging: bool = False

    def __post_init__(self):
        if self.thermal not in THERMAL:
            raise PolicyError(f"thermal state {self.thermal!r}: expected one of {THERMAL}")
        if self.battery_level is not None and not 0 <= self.battery_level <= 1:
            raise PolicyError(f"battery level {self.battery_level} is not in 0..1")


@dataclass
class AdaptiveComputePolicy:
    """Device state -> experts per token. Each condition scales the configured top-k by a
    factor, the smallest factor wins, the result is rounded up and kept >= minimum_experts.
    Same fields and defaults as the Swift struct."""
    serious_thermal_factor: float = 0.75
    critical_thermal_factor: float = 0.5
    low_power_mode_factor: float = 0.5
    low_battery_threshold: float = 0.2
    low_battery_factor: float = 0.75
    critical_battery_threshold: float = 0.1
    critical_battery_factor: float = 0.5
    minimum_experts: int = 1
    refresh_interval: int = 16  # tokens between two reads of the device state

    def factor(self, s: DeviceState) -> float:
        f = 1.0
        if s.thermal == "critical":
            f = min(f, self.critical_thermal_factor)
        elif s.thermal == "serious":
            f = min(f, self.serious_thermal_factor)
        if s.low_power_mode:
            f = min(f, self.low_power_mode_factor)
        if s.battery_level is not None and not s.is_charging:
            if s.battery_level < self.critical_battery_threshold:
                f = min(f, self.critical_battery_factor)
            elif s.battery_level < self.low_battery_threshold:
                f = min(f, self.low_battery_factor)
        return f

    def experts_per_token(self, configured: int, state: DeviceState) -> int:
        scaled = math.ceil(configured * self.factor(state) - 1e-12)
        return min(configured, max(self.minimum_experts, scaled))


@dataclass
class EntropyGate:
    """Difficulty: k for the next token from the entropy H (nats) of the current token's
    distribution. H < low: `k_easy`; otherwise the k given (the device policy's)."""
    low: float = 1.0
    k_easy: int = 1

    def k(self, entropy: float, k_full: int) -> int:
        return min(k_full, self.k_easy) if entropy < self.low else k_full


def entropy(logits) -> mx.array:
    """Entropy in nats of softmax(logits) over the last axis."""
    lp = logits.astype(mx.float32) - mx.logsumexp(logits.astype(mx.float32), axis=-1,
                                                   keepdims=True)
    return -(mx.exp(lp) * lp).sum(axis=-1)


def set_adaptive(model, top_p: Optional[float] = None, token_k=None) -> None:
    """Per-token modes on every MoE block (None switches a mode off). token_k: an int or
    an array with one k per row of the next forward's flattened (B * T) tokens."""
    if top_p is not None and not 0 < top_p <= 1:
        raise PolicyError(f"top_p must be in (0, 1], got {top_p}")
    if token_k is not None and not isinstance(token_k, int):
        token_k = mx.array(token_k).reshape(-1)
    for layer in model.layers:
        # object.__setattr__: an array must not become a model parameter.
        object.__setattr__(layer.feed_forward, "top_p", top_p)
        object.__setattr__(layer.feed_forward, "token_k", token_k)


# --- reading the device state -----------------------------------------------------------

def _run(cmd: list) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def parse_pmset_batt(text: str) -> tuple[Optional[float], bool]:
    """`pmset -g batt` -> (battery level 0..1 or None, charging or on AC)."""
    m = re.search(r"(\d+)%;\s*([A-Za-z ]+);", text)
    on_ac = "AC Power" in text
    if not m:
        return None, on_ac
    status = m.group(2).strip().lower()
    charging = on_ac or status in ("charging", "charged", "finishing charge")
    return int(m.group(1)) / 100.0, charging


def parse_pmset_lowpower(text: str) -> bool:
    """`pmset -g` -> Low Power Mode on (the `lowpowermode 1` line)."""
    m = re.search(r"^\s*lowpowermode\s+(\d+)", text, re.M)
    return bool(m and m.group(1) != "0")


def parse_pmset_therm(text: str) -> str:
    """`pmset -g therm` -> a thermal state: a recorded warning level, else the CPU speed
    limit (100: nominal, >= 80: fair, >= 50: serious, lower: critical)."""
    m = re.search(r"thermal warning level\s*[=:]\s*(\d+)", text, re.I)
    if m:
        return THERMAL[min(int(m.group(1)), 3)]
    m = re.search(r"CPU_Speed_Limit\s*=\s*(\d+)", text)
    if not m:
        return "nominal"
    v = int(m.group(1))
    return "nominal" if v >= 100 else "fair" if v >= 80 else "serious" if v >= 50 else "critical"


def read_device_state(run: Callable[[list], str] = _run, platform: str = sys.platform,
                      sysfs: Path = Path("/sys/class/power_supply")) -> DeviceState:
    """The device state from the OS: macOS through pmset; Linux through sysfs (battery
    only); elsewhere nominal. `run` and `sysfs` are injectable for tests."""
    if platform == "darwin":
        level, charging = parse_pmset_batt(run(["pmset", "-g", "batt"]))
        return DeviceState(thermal=parse_pmset_therm(run(["pmset", "-g", "therm"])),
                           low_power_mode=parse_pmset_lowpower(run(["pmset", "-g"])),
                           battery_level=level, is_charging=charging)
    if platform.startswith("linux") and sysfs.exists():
        for bat in sorted(sysfs.glob("BAT*")):
            try:
                level = int((bat / "capacity").read_text().strip()) / 100.0
                status = (bat / "status").read_text().strip().lower()
            except (OSError, ValueError):
                continue
            return DeviceState(battery_level=min(max(level, 0.0), 1.0),
                               is_charging=status in ("charging", "full"))
    return DeviceState()


# --- decoding with a per-step k ---------------------------------------------------------

@dataclass
class AdaptiveDecode:
    """Greedy decode where each step's k comes from the device policy and the entropy gate.
    `state` is read every `policy.refresh_interval` tokens. Returns tokens and the k used."""
    policy: AdaptiveComputePolicy = field(default_factory=AdaptiveComputePolicy)
    gate: Optional[EntropyGate] = None
    state: Callable[[], DeviceState] = read_device_state

    def __call__(self, model, prompt: list, max_tokens: int):
        k_cfg = model.args.num_experts_per_tok
        cache = model.make_cache()
        k_dev = self.policy.experts_per_token(k_cfg, self.state())
        model.set_experts_per_token(k_dev)
        logits = model(mx.array([prompt]), cache=cache)[:, -1]
        out, ks = [], []
        try:
            for i in range(max_tokens):
                if i and i % self.policy.refresh_interval == 0:
                    k_dev = self.policy.experts_per_token(k_cfg, self.state())
                k = self.gate.k(entropy(logits).item(), k_dev) if self.gate else k_dev
                tok = int(mx.argmax(logits, axis=-1).item())
                out.append(tok)
                ks.append(k)
                model.set_experts_per_token(k)
                logits = model(mx.array([[tok]]), cache=cache)[:, -1]
        finally:
            model.set_experts_per_token(None)
        return out, ks
