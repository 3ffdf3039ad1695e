"""The generate CLI at parity with mlx-lm's generate/chat for the options users use most
(issue 15): help with defaults, stdin prompts, --system-prompt, min-p, repetition penalty,
--max-kv-size, --draft-model, stop reasons, /help, chat history save/load."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_mobilemoe.generate import build_parser

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, stdin=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRANSFORMERS_VERBOSITY="error")
    return subprocess.run([sys.executable, "-m", "mlx_mobilemoe.generate", *map(str, args)],
                          input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def test_help_describes_every_option_with_its_default():
    text = build_parser().format_help()
    text = text[text.index("options:"):]  # the option list, not the usage line
    for flag, default in (("--max-tokens", "256"), ("--temp", "0.7"), ("--top-p", "1.0"),
                          ("--top-k", "0"), ("--min-p", "0.0"), ("--seed", "a fresh one")):
        line = text[text.index(flag + " "):]
        assert f"(default: {default}" in " ".join(line[:400].split()), flag
    for action in build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"


def test_mlx_lm_option_names():
    a = build_parser().parse_args(["--system-prompt", "be brief", "--min-p", "0.1",
                                   "--max-kv-size", "64", "--repetition-penalty", "1.1",
                                   "-m", "5"])
    assert (a.system, a.min_p, a.max_kv_size, a.repetition_penalty, a.max_tokens) == \
        ("be brief", 0.1, 64, 1.1, 5)
    for bad in (["--min-p", "1"], ["--min-p", "nan"], ["--repetition-penalty", "0"],
                ["--max-kv-size", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)


def test_stdin_prompt_stop_reason_and_options(tiny_qat):
    folder, _ = tiny_qat
    r = cli("--model", folder, "--prompt", "-", "--max-tokens", "3", "--temp", "0.5",
            "--min-p", "0.05", "--repetition-penalty", "1.2", "--max-kv-size", "32",
            "--seed", "1", stdin="hello there")
    assert r.returncode == 0, r.stderr
    assert "stop: max tokens]" in r.stderr or "stop: end of turn]" in r.stderr


def test_draft_model_speculative_decoding_gives_the_greedy_answer(tiny_qat):
    folder, _ = tiny_qat
    plain = cli("--model", folder, "--prompt", "hi", "--max-tokens", "6", "--temp", "0")
    spec = cli("--model", folder, "--draft-model", folder, "--prompt", "hi", "--max-tokens",
               "6", "--temp", "0")
    assert plain.returncode == 0 and spec.returncode == 0, spec.stderr
    assert spec.stdout == plain.stdout


def test_chat_commands_help_save_load_and_unknown(tiny_qat, tmp_path):
    folder, _ = tiny_qat
    saved = tmp_path / "chat.json"
    r = cli("--model", folder, "--max-tokens", "2", "--temp", "0",
            stdin=f"hello\n/help\n/save {saved}\n/nope\n/load {saved}\nagain\n/quit\n")
    assert r.returncode == 0, r.stderr
    assert "/save FILE" in r.stderr and "unknown command /nope" in r.stderr
    assert r.stderr.count("stop: ") == 2  # /help, /save, /nope, /load never reach the model
    msgs = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"] and msgs[0]["content"] == "hello"
    assert "[loaded 2 messages" in r.stderr


def test_system_message_a_model_ignores_is_reported(tiny_qat, tmp_path):
    folder, _ = tiny_qat
    r = cli("--model", folder, "--raw", "--system", "be brief", "--prompt", "hi",
            "--max-tokens", "2")
    assert r.returncode == 0 and "--system has no effect" in r.stderr
