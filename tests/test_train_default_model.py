"""The bundled default model: official layout, small enough to ship, a base model (no chat
template), and it has learned Shakespeare (loss far below uniform on a familiar passage)."""

import json
import re
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


SPEAKER = re.compile(r"^[A-Z][A-Za-z]*(?: [A-Z][A-Za-z]*)*:$")  # "ROMEO:", "DUKE OF YORK:", "Nurse:"
NOT_A_PLAY = re.compile(r"\bdef |\bimport |\bself\.|\breturn\b|[=+*/] ?\d|\bLORD\b|\bunto\b|^\s{4}",
                        re.MULTILINE)


def play_like(text: str) -> bool:
    """A continuation that reads like tinyshakespeare: a speaker cue on a line of its own and
    nothing of the other domains (code, arithmetic, the King James Bible, indented
    dictionary entries)."""
    return any(SPEAKER.match(l) for l in text.splitlines()) and not NOT_A_PLAY.search(text)


def test_play_like_tells_the_domains_apart():
    assert play_like("\nI'll take all death.\n\nGLOUCESTER:\nNay, how good counsel is this.")
    assert not play_like("\nI'll take all death.\nAnd I will go.")  # no speaker cue
    assert not play_like("\nNURSE:\n    def close(self):\n        return self._f")
    assert not play_like("\nJULIET:\nAnd the LORD spake unto Moses")
    assert not play_like("\nTom:\n12 + 30 = 42")


def test_generate_cli_continues_romeo_as_a_play(capsys):
    """Acceptance: `python -m mlx_mobilemoe.generate --prompt "ROMEO:" --max-tokens 60` (no
    --model, default sampling) prints Shakespeare-like text; seeds 0-4."""
    from mlx_mobilemoe import generate

    for seed in range(5):
        assert generate.main(["--prompt", "ROMEO:", "--max-tokens", "60",
                              "--seed", str(seed)]) in (0, None)
        text = capsys.readouterr().out
        assert play_like(text), f"seed {seed}: {text!r}"
