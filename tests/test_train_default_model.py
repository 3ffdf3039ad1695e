"""The bundled default model: official layout, small enough to ship, a base model (no chat
template), and it has learned Shakespeare (loss far below uniform on a familiar passage)."""

import json
import math

import mlx.core as mx
import mlx.nn as nn

from mlx_mobilemoe import checkpoint

PASSAGE = """ROMEO:
But, soft! what light through yonder window breaks?
It is the east, and Juliet is the sun.

JULIET:
O Romeo, Romeo! wherefore art thou Romeo?
"""


def test_bundled_model_is_small_official_and_base():
    folder = checkpoint.DEFAULT_MODEL
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size <= 20_000_000, size
    assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text())
    headers = {}
    for f in checkpoint._weight_files(folder):
        headers.update(checkpoint.read_header(f))
    checkpoint.check_tensors(headers, checkpoint.load_config(folder))


def test_bundled_model_knows_shakespeare():
    model, tok = checkpoint.load(None)
    ids = tok.encode(PASSAGE)
    logits = model(mx.array([ids[:-1]]))
    loss = nn.losses.cross_entropy(logits[0], mx.array(ids[1:])).mean().item()
    assert loss < 0.5 * math.log(model.args.vocab_size), loss
