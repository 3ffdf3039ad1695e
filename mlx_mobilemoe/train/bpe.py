"""Train the byte-level BPE tokenizer of a model trained from scratch.

Same files and format as `mlx_mobilemoe.tokenizer.train_tokenizer` (the Llama 3 format:
tokenizer.json + tokenizer_config.json, read by Python and the Swift package alike), with the
pre-tokenizer split as a choice:
- "llama3": Llama 3's split, where punctuation takes the newlines after it (":\\n" is one
  piece). A raw prompt that ends in ":" then tokenizes unlike the training text ("ROMEO:"
  ends in ":" where training always saw ":\\n"), which derails small base models.
- "lines": the same split with newlines kept apart from punctuation, so a prompt cut at a
  line end tokenizes exactly as the training text did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from .. import tokenizer as T

SPLITS = {
    "llama3": T.SPLIT_PATTERN,
    "lines": T.SPLIT_PATTERN.replace(r" ?[^\s\p{L}\p{N}]+[\r\n]*", r" ?[^\s\p{L}\p{N}]+"),
}


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir, split: str = "llama3",
              chat_template: Optional[str] = None) -> Path:
    """Byte-level BPE on `texts`; special tokens take the first ids (as train_tokenizer)."""
    if split not in SPLITS:
        raise ValueError(f"unknown tokenizer split {split!r}; choose from {sorted(SPLITS)}")
    if split == "llama3":
        return T.train_tokenizer(texts, vocab_size, out_dir, chat_template=chat_template)
    import json

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLITS[split]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=T.SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    # tokenizer_config.json as train_tokenizer writes it.
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": T.BOS,
           "eos_token": T.EOS, "pad_token": T.PAD, "add_bos_token": False,
           "model_max_length": 131072, "clean_up_tokenization_spaces": False}
    if chat_template:
        cfg["chat_template"] = chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out
