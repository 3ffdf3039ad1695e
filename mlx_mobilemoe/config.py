"""ModelArgs: the fields of an official MobileMoE config.json, and the size presets.

Field names are exactly the checkpoint's config.json keys (DESIGN.md §3), so a config
round-trips through `from_dict` / `to_dict` unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional


class ConfigError(ValueError):
    """A config.json we cannot read or cannot run."""


QUANT_FORMAT = "mobilemoe-int4-g32"

# The quantization block of an official QAT config.json.
QAT_QUANTIZATION = {
    "format": QUANT_FORMAT,
    "group_size": 32,
    "embedding_group_size": 32,
    "qmin": -8,
    "qmax": 7,
    "symmetric": True,
    "scale_dtype": "float16",
    "packed": True,
}

# Keys Hugging Face writes into every config.json that say nothing about the forward pass.
_HOUSEKEEPING_KEYS = {
    "_name_or_path", "auto_map", "torch_dtype", "dtype", "transformers_version", "use_cache",
    "initializer_range", "attention_dropout", "pad_token_id", "output_router_logits",
    "router_aux_loss_coef", "router_jitter_noise", "pretraining_tp", "return_dict",
}


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
    max_position_embeddings: int = 131072
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

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, params: dict) -> "ModelArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        required = [
            f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [k for k in required if k not in params]
        if missing:
            raise ConfigError(f"config is missing required field(s): {', '.join(missing)}")
        unknown = sorted(k for k in params if k not in known and k not in _HOUSEKEEPING_KEYS)
        if unknown:
            raise ConfigError(
                f"config has field(s) this implementation does not know: {', '.join(unknown)}; "
                "refusing to guess what they change"
            )
        args = cls(**{k: v for k, v in params.items() if k in known})
        args.validate()
        return args

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["quantization"] is None:
            del d["quantization"]
        return d

    # --- checks -------------------------------------------------------------------------

    def validate(self) -> None:
        def bad(msg):
            raise ConfigError(msg)

        if self.model_type != "mobilemoe":
            bad(f"model_type is {self.model_type!r}, expected 'mobilemoe'")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "intermediate_size_mlp",
                     "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "head_dim", "num_local_experts", "num_experts_per_tok"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(f"{name} must be a non-negative integer, got {v!r}")
        if self.interleave_moe_layer_step != 1:
            bad("interleave_moe_layer_step != 1 (dense layers between MoE layers) is not "
                f"supported; got {self.interleave_moe_layer_step}")
        if self.intermediate_size_mlp and self.intermediate_size_mlp % self.intermediate_size:
            bad(f"shared expert width intermediate_size_mlp={self.intermediate_size_mlp} is not a "
                f"multiple of the routed expert width intermediate_size={self.intermediate_size}")
        if self.num_attention_heads % max(self.num_key_value_heads, 1):
            bad("num_attention_heads must be a multiple of num_key_value_heads")
        if not 1 <= self.num_experts_per_tok <= self.num_local_experts:
            bad(f"num_experts_per_tok={self.num_experts_per_tok} must be in "
                f"1..num_local_experts={self.num_local_experts}")
        if self.hidden_act != "silu":
            bad(f"hidden_act {self.hidden_act!r} is not supported (MobileMoE uses silu)")
        if self.attention_bias:
            bad("attention_bias=true is not part of MobileMoE")
        if not self.tie_word_embeddings:
            bad("untied word embeddings are not part of the MobileMoE checkpoint contract")
        if self.head_dim % 2:
            bad("head_dim must be even for RoPE")
        if self.no_rope_layers and len(self.no_rope_layers) != self.num_hidden_layers:
            bad(f"no_rope_layers has {len(self.no_rope_layers)} entries for "
                f"{self.num_hidden_layers} layers")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_hidden_layers:
                bad(f"layer_types has {len(self.layer_types)} entries for "
                    f"{self.num_hidden_layers} layers")
            other = sorted(set(self.layer_types) - {"full_attention"})
            if other:
                bad(f"layer_types {other} are not supported (only full_attention)")
        rs = self.rope_scaling
        if rs is not None:
            kind = rs.get("rope_type", rs.get("type"))
            if kind not in ("llama3", "default", None):
                bad(f"rope_scaling type {kind!r} is not supported (llama3 only)")
            if kind == "llama3":
                need = ["factor", "original_max_position_embeddings", "low_freq_factor",
                        "high_freq_factor"]
                miss = [k for k in need if k not in rs]
                if miss:
                    bad(f"rope_scaling is missing {', '.join(miss)}")
        if self.quantization is not None:
            q = self.quantization
            if q.get("format") != QUANT_FORMAT:
                bad(f"quantization format {q.get('format')!r} is not supported "
                    f"(expected {QUANT_FORMAT!r})")
            diff = {k: q.get(k) for k, v in QAT_QUANTIZATION.items() if q.get(k, v) != v}
            if diff:
                bad(f"quantization settings {diff} differ from the official int4 g32 format")

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


_OFFICIAL = dict(
    vocab_size=128256, head_dim=64, num_key_value_heads=4, num_local_experts=60,
    num_experts_per_tok=4, rms_norm_eps=1e-5, rope_theta=500000.0,
    rope_scaling=_llama3_scaling(), max_position_embeddings=131072,
    routed_scaling_factor=1.0, norm_topk_prob=True, use_qk_norm=True,
    tie_word_embeddings=True, bos_token_id=128000, eos_token_id=[128001, 128009],
)

PRESETS = {
    "S": dict(_OFFICIAL, num_hidden_layers=20, hidden_size=768, num_attention_heads=12,
              intermediate_size=384, intermediate_size_mlp=1536),
    # M is inferred from the paper's scaling, not confirmed against a released config.
    "M": dict(_OFFICIAL, num_hidden_layers=26, hidden_size=1024, num_attention_heads=16,
              intermediate_size=512, intermediate_size_mlp=2048),
    "L": dict(_OFFICIAL, num_hidden_layers=32, hidden_size=1280, num_attention_heads=20,
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
    no_rope_layers pattern to the new depth (unless no_rope_layers is given too)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    base = dict(PRESETS[name])
    pattern = base.get("no_rope_layers")
    if pattern and "num_hidden_layers" in overrides and "no_rope_layers" not in overrides:
        n = overrides["num_hidden_layers"]
        if isinstance(n, int) and n > 0:
            base["no_rope_layers"] = [pattern[i % len(pattern)] for i in range(n)]
    return ModelArgs.from_dict({**base, **overrides})
