"""Official-shaped MobileMoE checkpoint folders, written independently of `save()`.

    python3 tests/official_fixture.py OUT_DIR --layout qat|bf16 [--size small|S] [--seed N]

or `write_official(folder, layout="qat", size="small", seed=0)` from Python. A folder holds
what a released facebook/MobileMoE-{S,M,L}-{QAT,SFT} repository holds, reconstructed from
public readers of them (lalamo's HFMobileMoEConfig, the Java port's MobileMoeHuggingFaceConfig
and tokenizer tests; DESIGN.md §3):

- config.json with the full released key set and values (S values; `size="small"` only
  shrinks the layer widths and depth: H 64, 2 layers, 4/2 heads of 16, I 32, S 128; vocab
  stays 128256 so the real tokenizer fits). QAT adds the `quantization` block.
- generation_config.json (eos ids; the released values are not confirmed: ours differ from
  config.json's on purpose, so a reader that ignores one of the files is caught).
- model.safetensors: random tensors in the official layout, written with NumPy by
  tests/official.py (QAT: U8 packed int4 + F16 scales; BF16: the unconfirmed BF16 names).
- tokenizer.json: a real Llama 3 tokenizer (128,000 byte-level BPE ranks + 256 special
  tokens = 128,256 ids) built at run time from the tiktoken ranks that the `llama-models`
  wheel ships (llama_models/llama3/tokenizer.model; covered by the Llama 3 Community License,
  so no derived file is committed). The build is cached (MOBILEMOE_FIXTURE_CACHE, default
  <tmp>/mlx-mobilemoe-fixture-cache), keyed by the ranks file's sha256.
  Special tokens: the Llama 4 names on Llama 3 ids, <|begin_of_text|> 128000,
  <|end_of_text|> 128001, <|header_start|> 128005, <|header_end|> 128006, <|eom|> 128007,
  <|eot|> 128008 (ids pinned by the Java port's MobileMoeTokenizerIntegrationTest; the names of
  the other reserved ids are not confirmed).
- tokenizer_config.json with the Llama-4-style chat template, add_bos_token true,
  clean_up_tokenization_spaces true.

Python only: NumPy, `tokenizers`, the llama-models wheel's data file (nothing imported from it).
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import official  # noqa: E402  (the NumPy writer of the tensor layout)

VOCAB = 128256
N_RANKS = 128000
BOS, EOS, HEADER_START, HEADER_END, EOM, EOT = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|header_start|>", "<|header_end|>", "<|eom|>",
    "<|eot|>")
# Ids 128000.. in order; the rest of the 256 are reserved tokens.
NAMED_SPECIALS = [BOS, EOS, "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                  HEADER_START, HEADER_END, EOM, EOT, "<|step|>"]
SPECIAL_TOKENS = NAMED_SPECIALS + [f"<|reserved_special_token_{i}|>"
                                   for i in range(256 - len(NAMED_SPECIALS))]
SPECIAL_IDS = {t: N_RANKS + i for i, t in enumerate(SPECIAL_TOKENS)}

# Llama 3's pre-tokenizer split (same as mlx_mobilemoe.tokenizer.SPLIT_PATTERN, restated here
# so this writer stays independent of the package).
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The released chat format (Llama 4's tokens): BOS, then per message
# <|header_start|>role<|header_end|>\n\n content <|eot|>; the generation prompt opens an
# assistant header. Content may be a string or a list of {"type": "text", "text": ...} parts.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|header_start|>' + message['role'] + '<|header_end|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}{%- if part['type'] == 'text' %}"
    "{{- part['text'] }}{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|eot|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|header_start|>assistant<|header_end|>\\n\\n' }}"
    "{%- endif %}"
)

CONFIG_EOS = [SPECIAL_IDS[EOS], SPECIAL_IDS[EOT]]  # 128001, 128008
GENERATION_EOS = [SPECIAL_IDS[EOS], SPECIAL_IDS[EOM], SPECIAL_IDS[EOT]]  # + 128007

QUANTIZATION = {
    "format": "mobilemoe-int4-g32", "group_size": 32, "embedding_group_size": 32,
    "qmin": -8, "qmax": 7, "symmetric": True, "scale_dtype": "float16",
    "linear_group_axis": "in (last dim of [out, in])",
    "expert_group_axis": "out (last dim of [E, in, out])", "packed": True,
}

# The released S config.json (QAT adds "quantization"); keys in the released order.
S_CONFIG = {
    "architectures": ["MobileMoEForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_mobilemoe.MobileMoEConfig",
                 "AutoModelForCausalLM": "modeling_mobilemoe.MobileMoEForCausalLM"},
    "model_type": "mobilemoe",
    "vocab_size": VOCAB,
    "hidden_size": 768,
    "intermediate_size": 384,
    "intermediate_size_mlp": 1536,
    "num_hidden_layers": 20,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 16.0,
                     "original_max_position_embeddings": 8192, "low_freq_factor": 1.0,
                     "high_freq_factor": 1.0},
    "num_local_experts": 60,
    "num_experts_per_tok": 4,
    "interleave_moe_layer_step": 1,
    "no_rope_layers": [1] * 20,
    "layer_types": ["full_attention"] * 20,
    "use_qk_norm": True,
    "attn_temperature_tuning": False,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "routed_scaling_factor": 2.5,
    "norm_topk_prob": True,
    "bos_token_id": SPECIAL_IDS[BOS],
    "eos_token_id": CONFIG_EOS,
    "transformers_version": "4.57.1",
}
# Keys a released config.json carries that are Hugging Face housekeeping, not the model.
HOUSEKEEPING_KEYS = ("auto_map", "transformers_version")

SIZES = {
    "S": {},
    "small": dict(hidden_size=64, intermediate_size=32, intermediate_size_mlp=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, no_rope_layers=[1] * 2, layer_types=["full_attention"] * 2),
}


def official_config(layout: str = "qat", size: str = "small") -> dict:
    """The config.json dict of an official-shaped folder."""
    if layout not in ("qat", "bf16"):
        raise ValueError(f"layout must be 'qat' or 'bf16', got {layout!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    cfg = copy.deepcopy(S_CONFIG)
    cfg.update(copy.deepcopy(SIZES[size]))
    if layout == "qat":
        cfg["quantization"] = dict(QUANTIZATION)
    return cfg


# --- the Llama 3 tokenizer, from the tiktoken ranks --------------------------------------

def ranks_file() -> Path:
    spec = importlib.util.find_spec("llama_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the `llama-models` package (PyPI) is not installed; it ships the "
                           "Llama 3 tokenizer ranks this fixture needs: "
                           "pip install -e '.[dev]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "llama3" / "tokenizer.model"
    if not path.is_file():
        raise RuntimeError(f"{path}: not found in the installed llama-models package")
    return path


def _byte_to_unicode() -> dict:
    """The byte-level BPE alphabet: printable bytes map to themselves, the others to
    code points from 256 up, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _read_ranks(path: Path) -> dict:
    ranks = {}
    for line in path.read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != N_RANKS or sorted(ranks.values()) != list(range(N_RANKS)):
        raise RuntimeError(f"{path}: expected {N_RANKS} ranks 0..{N_RANKS - 1}")
    return ranks


def _build_tokenizer_json(ranks: dict) -> str:
    """tokenizer.json text: byte-level BPE whose merges reproduce the rank order (each token
    of rank r is the merge of any split into two tokens of lower rank, ordered by r, then by
    the ranks of the two parts), Llama 3's split, BOS added by the post-processor."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, \
        processors

    b2u = _byte_to_unicode()

    def text(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {text(tok): r for tok, r in ranks.items()}
    merges = []
    for tok, r in ranks.items():
        parts = []
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            rl, rr = ranks.get(left), ranks.get(right)
            if rl is not None and rr is not None and rl < r and rr < r:
                parts.append((rl, rr, left, right))
        parts.sort()
        merges.extend((r, rl, rr, text(left), text(right)) for rl, rr, left, right in parts)
    merges.sort()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for *_, a, b in merges],
                               ignore_merges=True, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in SPECIAL_TOKENS])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
            special_tokens=[(BOS, SPECIAL_IDS[BOS])]),
    ])
    if tok.get_vocab_size() != VOCAB or tok.token_to_id(EOT) != SPECIAL_IDS[EOT]:
        raise RuntimeError("built tokenizer does not have the expected 128,256 ids")
    return tok.to_str()


def llama3_tokenizer_json(cache_dir=None) -> Path:
    """Path of the built tokenizer.json (built once per ranks file, then cached)."""
    src = ranks_file()
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    cache = Path(cache_dir or os.environ.get("MOBILEMOE_FIXTURE_CACHE")
                 or Path(tempfile.gettempdir()) / "mlx-mobilemoe-fixture-cache")
    out = cache / f"llama3-mobilemoe-tokenizer-{digest}-v1.json"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    data = _build_tokenizer_json(_read_ranks(src))
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".tok-")  # atomic: concurrent test workers
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return out


def tokenizer_config() -> dict:
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True}
             for t, i in SPECIAL_IDS.items()}
    return {
        "added_tokens_decoder": added,
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": BOS,
        "eos_token": EOT,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 8192,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def write_tokenizer(folder, cache_dir=None) -> None:
    folder = Path(folder)
    (folder / "tokenizer.json").write_bytes(llama3_tokenizer_json(cache_dir).read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2) + "\n")


# --- the folder ---------------------------------------------------------------------------

def write_official(folder, layout: str = "qat", size: str = "small", seed: int = 0,
                   tokenizer: bool = True) -> dict:
    """Write an official-shaped folder; returns its tensors (name -> (dtype, raw ndarray))."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = official_config(layout, size)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = {"bos_token_id": SPECIAL_IDS[BOS], "eos_token_id": GENERATION_EOS,
           "transformers_version": cfg["transformers_version"]}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    tensors = official.random_tensors(cfg, qat=layout == "qat", seed=seed)
    official.write_safetensors(folder / "model.safetensors", tensors)
    if tokenizer:
        write_tokenizer(folder)
    return tensors


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--layout", choices=["qat", "bf16"], default="qat")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    write_official(a.out_dir, layout=a.layout, size=a.size, seed=a.seed)
    print(a.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
