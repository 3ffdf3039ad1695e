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
    return T.train_tokenizer(texts, vocab_size, out_dir, chat_template=chat_template,
                             split_pattern=SPLITS[split])
