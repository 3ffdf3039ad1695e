"""ModelArgs: the fields of an official MobileMoE config.json, and the size presets.

Field names are exactly the checkpoint's config.json keys (DESIGN.md §3), so a config
round-trips through `from_dict` / `to_dict` unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional


class ConfigError(ValueError):
    """A config.json we cannot read or cannot run."""


QUANT_FORMAT = "mobilemoe-int4-g32"

# The quantization block of an official QAT config.json (every key, released values).
QAT_QUANTIZATION = {
    "format": QUANT_FORMAT,
    "group_size": 32,
    "embedding_group_size": 32,
    "qmin": -8,
    "qmax": 7,
    "symmetric": True,
    "scale_dtype": "float16",
    "linear_group_axis": "in (last dim of [out, in])",
    "expert_group_axis": "out (last dim of [E, in, out])",
    "packed": True,
}

# Every key of a released MobileMoE config.json that says something about the model (the
# fields lalamo's HFMobileMoEConfig and the Java port's MobileMoeHuggingFaceConfig read, plus
# the token ids). `quantization` only in QAT checkpoints. `save()` writes exactly these.
RELEASED_KEYS = (
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
    "intermediate_size_mlp", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
    "rope_scaling", "num_local_experts", "num_experts_per_tok", "interleave_moe_layer_step",
    "no_rope_layers", "layer_types", "use_qk_norm", "attn_temperature_tuning",
    "tie_word_embeddings", "torch_dtype", "attention_bias", "attention_dropout",
    "routed_scaling_factor", "norm_topk_prob", "bos_token_id", "eos_token_id", "quantization",
)

# Keys Hugging Face writes into config.json that say nothing about the forward pass (the
# released repos carry auto_map for their remote code and transformers_version).
_HOUSEKEEPING_KEYS = {
    "_name_or_path", "auto_map", "dtype", "transformers_version", "use_cache",
    "initializer_range", "pad_token_id", "output_router_logits", "router_aux_loss_coef",
    "router_jitter_noise", "pretraining_tp", "return_dict",
}

FLOAT_DTYPES = ("bfloat16", "float16", "float32")

# Upper bounds on sizes: far above any MobileMoE model, low enough that a corrupt config
# cannot make the loader build a model of absurd size (or overflow a Swift Int32).
_LIMITS = {
    "vocab_size": 1 << 22, "hidden_size": 1 << 16, "intermediate_size": 1 << 18,
    "intermediate_size_mlp": 1 << 18, "num_hidden_layers": 1024, "num_attention_heads": 1024,
    "num_key_value_heads": 1024, "head_dim": 4096, "num_local_experts": 4096,
    "num_experts_per_tok": 4096, "max_position_embeddings": 1 << 24,
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a, b) -> bool:
    """JSON value equality that keeps booleans apart from numbers (True == 1 in Python)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


@dataclass
class ModelArgs:
    vocab_size: int
    hidden_size: int
    intermediate_size: int  # width of one routed expert
    intermediate_size_mlp: int  # width of the shared expert
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_local_experts: int
    num_experts_per_tok: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: Optional[dict] = None
    max_position_embeddings: int = 8192
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True
    use_qk_norm: bool = True
    tie_word_embeddings: bool = True
    interleave_moe_layer_step: int = 1
    no_rope_layers: list = field(default_factory=list)
    layer_types: Optional[list] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Any = None  # int or list of ints
    quantization: Optional[dict] = None
    model_type: str = "mobilemoe"
    architectures: list = field(default_factory=lambda: ["MobileMoEForCausalLM"])
    hidden_act: str = "silu"
    attention_bias: bool = False
    attn_temperature_tuning: bool = False  # Llama 4's long-context query scaling: off
    attention_dropout: float = 0.0  # training only; no effect on the forward pass
    torch_dtype: str = "bfloat16"  # the dtype of the checkpoint's float tensors

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, params: dict) -> "ModelArgs":
        if not isinstance(params, dict):
            raise ConfigError(f"config is a JSON {type(params).__name__}, not an object")
        bad_keys = [k for k in params if not isinstance(k, str)]
        if bad_keys:
            raise ConfigError(f"config keys must be strings, got {bad_keys[:3]!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        required = [
            f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [k for k in required if k not in params]
        if missing:
            raise ConfigError(f"config is missing required field(s): {', '.join(missing)}")
        unknown = sorted(str(k) for k in params if k not in known and k not in _HOUSEKEEPING_KEYS)
        if unknown:
            raise ConfigError(
                f"config has field(s) this implementation does not know: {', '.join(unknown)}; "
                "refusing to guess what they change"
            )
        values = {k: v for k, v in params.items() if k in known}
        q = values.get("quantization")
        if isinstance(q, dict) and _same(q.get("format"), QUANT_FORMAT):
            # Older saves lack the two axis strings: the format name implies them.
            values["quantization"] = {**QAT_QUANTIZATION, **q}
        args = cls(**values)
        args.validate()
        # The released form: one entry per layer (an empty list / null means every layer
        # applies RoPE with full attention).
        L = args.num_hidden_layers
        if not args.no_rope_layers:
            args.no_rope_layers = [1] * L
        if args.layer_types is None:
            args.layer_types = ["full_attention"] * L
        return args

    def to_dict(self) -> dict:
        """The released key set, in the released order, every list written out in full."""
        d = dataclasses.asdict(self)
        L = self.num_hidden_layers
        if not d["no_rope_layers"]:
            d["no_rope_layers"] = [1] * L
        if d["layer_types"] is None:
            d["layer_types"] = ["full_attention"] * L
        out = {k: d[k] for k in RELEASED_KEYS}
        if out["quantization"] is None:
            del out["quantization"]
        return out

    # --- checks -------------------------------------------------------------------------

    def validate(self) -> None:
        """Types and ranges of every field; raises ConfigError naming the field."""
        def bad(msg):
            raise ConfigError(msg)

        for name in ("model_type", "hidden_act", "torch_dtype"):
            if not isinstance(getattr(self, name), str):
                bad(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.model_type != "mobilemoe":
            bad(f"model_type is {self.model_type!r}, expected 'mobilemoe'")
        arch = self.architectures
        if not (isinstance(arch, list) and all(isinstance(a, str) for a in arch)
                and "MobileMoEForCausalLM" in arch):
            bad(f"architectures must be a list of strings naming MobileMoEForCausalLM, got "
                f"{arch!r}")
        for name, limit in _LIMITS.items():
            v = getattr(self, name)
            low = 0 if name == "intermediate_size_mlp" else 1
            if not _is_int(v) or not low <= v <= limit:
                bad(f"{name} must be an integer in {low}..{limit}, got {v!r}")
        for name, top, below in (("rms_norm_eps", 1.0, True), ("rope_theta", 1e15, False),
                                 ("routed_scaling_factor", 1e6, False)):
            v = getattr(self, name)
            if not _is_number(v) or not math.isfinite(v) or v <= 0:
                bad(f"{name} must be a finite positive number, got {v!r}")
            if v > top or (below and v == top):  # (a huge JSON integer would also overflow
                bad(f"{name} must be {'below' if below else 'at most'} {top:g}, "  # MLX's casts)
                    f"got {v!r}")
        v = self.attention_dropout
        if not _is_number(v) or not 0 <= v < 1:
            bad(f"attention_dropout must be a number in [0, 1), got {v!r}")
        for name in ("norm_topk_prob", "use_qk_norm", "tie_word_embeddings", "attention_bias",
                     "attn_temperature_tuning"):
            if not isinstance(getattr(self, name), bool):
                bad(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.torch_dtype not in FLOAT_DTYPES:
            bad(f"torch_dtype {self.torch_dtype!r} is not one of {', '.join(FLOAT_DTYPES)}")
        if not _is_int(self.interleave_moe_layer_step) or self.interleave_moe_layer_step != 1:
            bad("interleave_moe_layer_step != 1 (dense layers between MoE layers) is not "
                f"supported; got {self.interleave_moe_layer_step!r}")
        if self.intermediate_size_mlp % self.intermediate_size:
            bad(f"shared expert width intermediate_size_mlp={self.intermediate_size_mlp} is not a "
                f"multiple of the routed expert width intermediate_size={self.intermediate_size}")
        if self.num_attention_heads % self.num_key_value_heads:
            bad("num_attention_heads must be a multiple of num_key_value_heads")
        if not self.num_experts_per_tok <= self.num_local_experts:
            bad(f"num_experts_per_tok={self.num_experts_per_tok} must be in "
                f"1..num_local_experts={self.num_local_experts}")
        if self.hidden_act != "silu":
            bad(f"hidden_act {self.hidden_act!r} is not supported (MobileMoE uses silu)")
        if self.attention_bias:
            bad("attention_bias=true is not part of MobileMoE")
        if self.attn_temperature_tuning:
            bad("attn_temperature_tuning=true (Llama 4's query temperature scaling) is not "
                "implemented; the released MobileMoE models set it to false")
        if not self.tie_word_embeddings:
            bad("tie_word_embeddings=false (untied embeddings) is not part of the MobileMoE "
                "checkpoint contract")
        if self.head_dim % 2:
            bad("head_dim must be even for RoPE")
        nr = self.no_rope_layers
        if not isinstance(nr, list) or not all(_is_int(x) and x in (0, 1) for x in nr):
            bad(f"no_rope_layers must be a list of 0/1 flags, got {nr!r}")
        if nr and len(nr) != self.num_hidden_layers:
            bad(f"no_rope_layers has {len(nr)} entries for {self.num_hidden_layers} layers")
        lt = self.layer_types
        if lt is not None:
            if not isinstance(lt, list) or not all(isinstance(x, str) for x in lt):
                bad(f"layer_types must be a list of strings, got {lt!r}")
            if len(lt) != self.num_hidden_layers:
                bad(f"layer_types has {len(lt)} entries for {self.num_hidden_layers} layers")
            other = sorted(set(lt) - {"full_attention"})
            if other:
                bad(f"layer_types {other} are not supported (only full_attention)")
        self._validate_token_ids()
        self._validate_rope_scaling()
        self._validate_quantization()

    def _validate_token_ids(self):
        V = self.vocab_size
        if self.bos_token_id is not None and not (_is_int(self.bos_token_id)
                                                  and 0 <= self.bos_token_id < V):
            raise ConfigError(f"bos_token_id must be an integer in 0..{V - 1} (vocab_size), "
                              f"got {self.bos_token_id!r}")
        e = self.eos_token_id
        ids = e if isinstance(e, list) else [] if e is None else [e]
        if not all(_is_int(i) and 0 <= i < V for i in ids):
            raise ConfigError(f"eos_token_id must be an integer or a list of integers in "
                              f"0..{V - 1} (vocab_size), got {e!r}")

    def _validate_rope_scaling(self):
        rs = self.rope_scaling
        if rs is None:
            return
        if not isinstance(rs, dict):
            raise ConfigError(f"rope_scaling must be an object or null, got {rs!r}")
        kind = rs.get("rope_type", rs.get("type"))
        if kind not in ("llama3", "default", None):
            raise ConfigError(f"rope_scaling.rope_type {kind!r} is not supported (llama3 only)")
        if kind != "llama3":
            return
        for k in ("factor", "original_max_position_embeddings", "low_freq_factor",
                  "high_freq_factor"):
            if k not in rs:
                raise ConfigError(f"rope_scaling.{k} is missing")
            v = rs[k]
            if not _is_number(v) or not math.isfinite(v) or v <= 0 or v > 1e9:
                raise ConfigError(f"rope_scaling.{k} must be a finite positive number, got {v!r}")
        if not _is_int(rs["original_max_position_embeddings"]):
            raise ConfigError("rope_scaling.original_max_position_embeddings must be an integer, "
                              f"got {rs['original_max_position_embeddings']!r}")
        if rs["factor"] < 1:
            raise ConfigError(f"rope_scaling.factor must be >= 1, got {rs['factor']!r}")
        if rs["high_freq_factor"] < rs["low_freq_factor"]:
            raise ConfigError("rope_scaling.high_freq_factor must be >= low_freq_factor")
        extra = sorted(set(rs) - {"rope_type", "type", "factor", "original_max_position_embeddings",
                                  "low_freq_factor", "high_freq_factor"})
        if extra:
            raise ConfigError(f"rope_scaling has field(s) this implementation does not know: "
                              f"{', '.join(map(str, extra))}")

    def _validate_quantization(self):
        q = self.quantization
        if q is None:
            return
        if not isinstance(q, dict):
            raise ConfigError(f"quantization must be an object or null, got {q!r}")
        if not _same(q.get("format"), QUANT_FORMAT):
            raise ConfigError(f"quantization.format {q.get('format')!r} is not supported "
                              f"(expected {QUANT_FORMAT!r})")
        diff = {k: q.get(k) for k, v in QAT_QUANTIZATION.items() if not _same(q.get(k, v), v)}
        if diff:
            raise ConfigError(f"quantization settings {diff} differ from the official int4 g32 "
                              "format")
        extra = sorted(set(q) - set(QAT_QUANTIZATION))
        if extra:
            raise ConfigError(f"quantization has field(s) this implementation does not know: "
                              f"{', '.join(map(str, extra))}")
        g = QAT_QUANTIZATION["group_size"]
        for name, n in (("hidden_size", self.hidden_size),
                        ("2 * intermediate_size", 2 * self.intermediate_size),
                        ("intermediate_size_mlp", self.intermediate_size_mlp)):
            if n % g:
                raise ConfigError(f"{name}={n} is not a multiple of the int4 group size {g}")
        if (self.num_attention_heads * self.head_dim) % g:
            raise ConfigError(f"num_attention_heads * head_dim is not a multiple of the int4 "
                              f"group size {g}")

    # --- derived ------------------------------------------------------------------------

    @property
    def is_quantized(self) -> bool:
        return self.quantization is not None

    def uses_rope(self, layer: int) -> bool:
        # Llama 4 convention: no_rope_layers[i] == 1 means layer i *does* apply RoPE.
        return not self.no_rope_layers or bool(self.no_rope_layers[layer])

    @property
    def eos_token_ids(self) -> list:
        e = self.eos_token_id
        if e is None:
            return []
        return list(e) if isinstance(e, (list, tuple)) else [e]

    def param_counts(self) -> dict:
        """Total and active (per token) parameter counts, embeddings included once."""
        H, L = self.hidden_size, self.num_hidden_layers
        attn = H * self.head_dim * (2 * self.num_attention_heads + 2 * self.num_key_value_heads)
        expert = 3 * H * self.intermediate_size
        shared = 3 * H * self.intermediate_size_mlp
        router = self.num_local_experts * H
        norms = 2 * H
        embed = self.vocab_size * H
        per_layer_total = attn + self.num_local_experts * expert + shared + router + norms
        per_layer_active = attn + self.num_experts_per_tok * expert + shared + router + norms
        return {
            "total": L * per_layer_total + embed + H,
            "active": L * per_layer_active + embed + H,
        }


def _llama3_scaling(factor=16.0, original=8192):
    return {
        "rope_type": "llama3",
        "factor": factor,
        "original_max_position_embeddings": original,
        "low_freq_factor": 1.0,
        "high_freq_factor": 1.0,
    }


# The released S/L config.json values (lalamo's HFMobileMoEConfig, the Java port's pinned
# S-QAT test): 8192 context (= the rope original context), routed_scaling_factor 2.5, RoPE and
# full attention in every layer. eos ids: <|end_of_text|> and <|eot|> (inferred).
_OFFICIAL = dict(
    vocab_size=128256, head_dim=64, num_key_value_heads=4, num_local_experts=60,
    num_experts_per_tok=4, rms_norm_eps=1e-5, rope_theta=500000.0,
    rope_scaling=_llama3_scaling(), max_position_embeddings=8192,
    routed_scaling_factor=2.5, norm_topk_prob=True, use_qk_norm=True,
    tie_word_embeddings=True, bos_token_id=128000, eos_token_id=[128001, 128008],
    attn_temperature_tuning=False, attention_dropout=0.0, torch_dtype="bfloat16",
)


def _every_layer(L: int) -> dict:
    return dict(num_hidden_layers=L, no_rope_layers=[1] * L, layer_types=["full_attention"] * L)


PRESETS = {
    "S": dict(_OFFICIAL, **_every_layer(20), hidden_size=768, num_attention_heads=12,
              intermediate_size=384, intermediate_size_mlp=1536),
    # M is inferred from the paper's scaling, not confirmed against a released config.
    "M": dict(_OFFICIAL, **_every_layer(26), hidden_size=1024, num_attention_heads=16,
              intermediate_size=512, intermediate_size_mlp=2048),
    "L": dict(_OFFICIAL, **_every_layer(32), hidden_size=1280, num_attention_heads=20,
              intermediate_size=640, intermediate_size_mlp=2560),
    # For tests: every mechanism present (GQA, llama3 RoPE, a NoPE layer, shared expert).
    "tiny": dict(
        vocab_size=320, hidden_size=64, intermediate_size=32, intermediate_size_mlp=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_local_experts=8, num_experts_per_tok=2, rms_norm_eps=1e-5, rope_theta=10000.0,
        rope_scaling=_llama3_scaling(factor=4.0, original=32), max_position_embeddings=512,
        routed_scaling_factor=1.0, norm_topk_prob=True, use_qk_norm=True,
        tie_word_embeddings=True, no_rope_layers=[1, 0],
        bos_token_id=0, eos_token_id=[1, 4],  # the ids train_tokenizer assigns
    ),
}


def preset(name: str, **overrides) -> ModelArgs:
    """A preset's config with `overrides`. A new num_hidden_layers repeats the preset's
    no_rope_layers / layer_types pattern to the new depth (unless given too)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    base = dict(PRESETS[name])
    n = overrides.get("num_hidden_layers")
    if isinstance(n, int) and 0 < n <= _LIMITS["num_hidden_layers"]:
        for key in ("no_rope_layers", "layer_types"):
            pattern = base.get(key)
            if pattern and key not in overrides:
                base[key] = [pattern[i % len(pattern)] for i in range(n)]
    return ModelArgs.from_dict({**base, **overrides})
