"""The chat CLI: one-shot, REPL, context errors, and the cached multi-turn session."""

import subprocess
import sys
import types

import pytest

from mlx_mobilemoe import load
from mlx_mobilemoe.generate import ContextError, Session, check_context


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "mlx_mobilemoe.generate", *args],
                          input=stdin, capture_output=True, text=True, timeout=300)


def test_one_shot_streams_text_and_stats(tiny_qat):
    r = run_cli("--model", str(tiny_qat[0]), "--prompt", "hi", "--max-tokens", "8",
                "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "generation: 8 tokens" in r.stderr and "tok/s" in r.stderr
    assert "peak memory" in r.stderr


def test_repl_reset_and_quit(tiny_qat):
    r = run_cli("--model", str(tiny_qat[0]), "--max-tokens", "4", "--temp", "0",
                stdin="hello\n/reset\nspeak\n/quit\n")
    assert r.returncode == 0, r.stderr
    assert "[conversation cleared]" in r.stderr
    assert r.stderr.count("generation: 4 tokens") == 2


def test_prompt_longer_than_context_is_an_error(tiny_qat):
    r = run_cli("--model", str(tiny_qat[0]), "--prompt", "speak " * 600, "--max-tokens", "4")
    assert r.returncode == 2
    assert "context is 512 tokens" in r.stderr


def test_missing_model_is_an_error(tmp_path):
    r = run_cli("--model", str(tmp_path / "none" / "x"), "--prompt", "hi")
    assert r.returncode == 2 and "error:" in r.stderr


def test_context_budget():
    assert check_context(10, 100, 512) == 100
    assert check_context(500, 100, 512) == 12
    with pytest.raises(ContextError):
        check_context(512, 1, 512)


def test_multi_turn_cache_reuse_matches_fresh_session(tiny_qat, capsys):
    """Turn 2 reuses turn 1's KV cache; it must produce what a fresh session produces."""
    model, tok = load(tiny_qat[0])
    opts = types.SimpleNamespace(temp=0.0, top_p=1.0, top_k=0, system="be brief", raw=False,
                                 max_tokens=6)
    s = Session(model, tok, opts)
    s.reply("Speak, speak.")
    fed_before = s.cache[0].offset
    second = s.reply("You are all resolved?")
    assert s.cache[0].offset > fed_before
    fresh = Session(model, tok, opts)
    fresh.messages = list(s.messages[:-2])  # system, user 1, assistant 1; empty cache
    again = fresh.reply("You are all resolved?")
    assert s.messages[-1]["content"] == fresh.messages[-1]["content"]
    assert second.generation_tokens == again.generation_tokens
