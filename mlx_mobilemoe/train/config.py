"""TrainConfig: one stage's settings, read from a YAML stage file plus `key=value` overrides.

Precedence: dataclass defaults < the stage's defaults (STAGE_DEFAULTS) < YAML < command line.
Nested sections (`moe`, `lora`) are plain dicts merged key by key, so `moe.z_loss=0` on the
command line changes one field and keeps the others.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

MOE_DEFAULTS = {
    "dispatch": None,  # "drop" (drop-and-pad, capacity factor) or "dropless"; None: by stage
    "capacity_factor": 1.25,
    "balance_gamma": 1e-3,  # aux-loss-free balancing: bias step per optimizer step
    "z_loss": 1e-4,  # router z-loss coefficient
    "aux_loss": 0.0,  # Switch-style alpha * E * sum(f_i * P_i); 0 = off
}

LORA_DEFAULTS = {
    "rank": 8,
    "alpha": 16.0,
    "dropout": 0.0,  # attention/shared-expert adapters only
    "targets": ["attention", "experts"],  # also: "shared_expert"
}

QAT_DEFAULTS = {  # the qat stage (train/stages.py, docs/quantization.md)
    "scales": "learned",  # "learned": LSQ log-scales; "dynamic": absmax / 7 every step
    "init": "mse",  # learned scales start from the per-group MSE search ("rtn": absmax / 7)
    "act_bits": 8,  # per-token dynamic INT8 fake quantization of linear inputs; 0 = off
}

# Defaults that differ by stage (applied under the YAML file); every stage of
# stages.STAGES has an entry, which is what makes its name known.
STAGE_DEFAULTS = {
    "pretrain": {"moe": {"dispatch": "drop"}},
    "midtrain": {"moe": {"dispatch": "drop"}, "seq_len": 1024},
    "sft": {"moe": {"dispatch": "dropless"}, "lr": 5e-5, "warmup": 10},
    # Adapters only: the base model's routing biases stay as they are.
    "lora": {"moe": {"dispatch": "dropless", "balance_gamma": 0.0}, "lr": 2e-4, "warmup": 10,
             "weight_decay": 0.0},
    "qat": {"moe": {"dispatch": "dropless", "balance_gamma": 0.0}, "lr": 1e-4, "warmup": 10,
            "weight_decay": 0.0},
}


class TrainConfigError(ValueError):
    """A stage file or override we cannot run."""


@dataclass
class TrainConfig:
    stage: str = "pretrain"
    # A checkpoint folder / HF id, a preset name ("tiny", "S", ...), or {preset: name, **fields}.
    model: Any = "tiny"
    init_std: float = 0.02  # from-scratch init (ignored when starting from a checkpoint)
    # Folder with tokenizer.json, or {vocab_size: N, sample_mb: 8, split: llama3|lines} to
    # train a byte-level BPE on the data (split: see train/bpe.py).
    # None: the model folder's tokenizer.
    tokenizer: Any = None
    # Text files, folders, {"text"}/{"messages"} jsonl or prepared *.tokens folders; a list
    # (weights proportional to size) or {path: weight}.
    data: Any = None
    val_fraction: float = 0.05
    # Where packed windows start: None = any token; "line" = a line start, so the first
    # positions look like a prompt typed at the start of a line (e.g. "ROMEO:").
    align: Optional[str] = None
    cache_dir: Optional[str] = None  # token files; None: <out>/cache
    out: str = "runs/out"
    seq_len: int = 256
    batch_size: int = 8  # sequences per optimizer step, over all ranks and micro-batches
    grad_accum: int = 1
    steps: int = 100
    time_budget: Optional[float] = None  # seconds after compiling: cap `steps` by speed
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.1
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 0  # 0: only at the end
    eval_batches: int = 8  # per domain; 0: the whole held-out split
    save_every: int = 0  # 0: only at the end
    log_every: int = 10  # progress line period (the JSONL log gets every step)
    stop_after: Optional[int] = None  # stop (with a checkpoint) after this step, as if killed
    max_bad_steps: int = 3  # consecutive non-finite steps before giving up
    compile: bool = True
    # Train only the parameters under these module names (e.g. [router]: the routers of an
    # upcycled model, docs/upcycling.md); None: everything the stage trains.
    trainable: Optional[list] = None
    moe: dict = field(default_factory=dict)
    lora: dict = field(default_factory=dict)
    qat: dict = field(default_factory=dict)

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else self.out_dir / "cache"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k in ("moe", "lora", "qat"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(item: str) -> dict:
    """'moe.z_loss=0' -> {'moe': {'z_loss': 0}} (values parsed as YAML)."""
    import yaml

    if "=" not in item:
        raise TrainConfigError(f"override {item!r} is not key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    for part in reversed(key.split(".")[1:]):
        value = {part: value}
    return {key.split(".")[0]: value}


def make_config(file_values: Optional[dict] = None, overrides=(), **kwargs) -> TrainConfig:
    """Build a TrainConfig from a stage file's dict, `key=value` strings and keyword fields."""
    user = dict(file_values or {})
    for item in overrides:
        user = _merge(user, parse_override(item))
    user = _merge(user, kwargs)
    stage = user.get("stage", "pretrain")
    if stage not in STAGE_DEFAULTS:
        raise TrainConfigError(f"unknown stage {stage!r}")
    values = {"moe": dict(MOE_DEFAULTS), "lora": dict(LORA_DEFAULTS), "qat": dict(QAT_DEFAULTS)}
    values = _merge(values, STAGE_DEFAULTS.get(stage, {}))
    values = _merge(values, user)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TrainConfigError(f"unknown setting(s): {', '.join(unknown)}")
    for section, defaults in (("moe", MOE_DEFAULTS), ("lora", LORA_DEFAULTS),
                              ("qat", QAT_DEFAULTS)):
        bad = sorted(set(values[section]) - set(defaults))
        if bad:
            raise TrainConfigError(f"unknown {section} setting(s): {', '.join(bad)}")
    for k, v in values.items():
        default = _FIELD_DEFAULTS.get(k)
        values[k] = _coerce(v, default)
    for section, defaults in (("moe", MOE_DEFAULTS), ("lora", LORA_DEFAULTS),
                              ("qat", QAT_DEFAULTS)):
        values[section] = {k: _coerce(v, defaults[k]) for k, v in values[section].items()}
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def _coerce(value, default):
    """YAML 1.1 reads 3e-4 as a string: make numbers of number-valued settings."""
    if isinstance(value, str) and isinstance(default, (int, float)) \
            and not isinstance(default, bool):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                   if f.default is not dataclasses.MISSING}
# Optional numbers (default None) that are numbers when given.
_FIELD_DEFAULTS.update({"time_budget": 0.0, "stop_after": 0})


def load_config(path=None, overrides=(), **kwargs) -> TrainConfig:
    import yaml

    values = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise TrainConfigError(f"{p}: no such stage file")
        values = yaml.safe_load(p.read_text()) or {}
        if not isinstance(values, dict):
            raise TrainConfigError(f"{p}: a stage file is a YAML mapping")
        values = relative_to(values, p.parent)
    return make_config(values, overrides, **kwargs)


PATH_SETTINGS = ("tokenizer", "data", "out", "cache_dir")  # always paths when strings


def relative_to(values: dict, folder: Path) -> dict:
    """A stage file's relative paths resolved against the file's folder, so the file works
    from any directory (`key=value` overrides stay relative to the working directory).
    `model` is a path only when that folder exists (else a preset or a Hugging Face id)."""
    def fix(v):
        if isinstance(v, str) and v and not Path(v).expanduser().is_absolute():
            return str(folder / v)
        return v

    out = dict(values)
    for k in PATH_SETTINGS:
        v = out.get(k)
        if isinstance(v, list):
            out[k] = [fix(x) for x in v]
        elif isinstance(v, dict) and k == "data":  # {path: weight}
            out[k] = {fix(x): w for x, w in v.items()}
        elif not isinstance(v, dict):  # tokenizer: {vocab_size: N} is not a path
            out[k] = fix(v)
    m = out.get("model")
    if isinstance(m, str) and (folder / m).is_dir() and not Path(m).is_absolute():
        out["model"] = str(folder / m)
    return out


def validate(cfg: TrainConfig) -> None:
    def bad(msg):
        raise TrainConfigError(msg)

    if cfg.data is None:
        bad("no training data: set data (files, folders or jsonl)")
    for name in ("seq_len", "batch_size", "grad_accum", "steps"):
        if int(getattr(cfg, name)) < 1:
            bad(f"{name} must be >= 1")
    if cfg.moe["dispatch"] not in ("drop", "dropless"):
        bad(f"moe.dispatch must be 'drop' or 'dropless', got {cfg.moe['dispatch']!r}")
    if cfg.moe["capacity_factor"] <= 0:
        bad("moe.capacity_factor must be > 0")
    if cfg.trainable is not None and (not isinstance(cfg.trainable, list) or not all(
            isinstance(t, str) and t for t in cfg.trainable) or not cfg.trainable):
        bad(f"trainable must be a non-empty list of module names, got {cfg.trainable!r}")
    if cfg.align not in (None, "line"):
        bad(f"align must be null or 'line', got {cfg.align!r}")
    if not 0 < cfg.val_fraction < 1:
        bad("val_fraction must be in (0, 1)")
