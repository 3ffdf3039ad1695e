"""The chat CLI: one-shot, REPL, context errors, and the cached multi-turn session."""

import subprocess
import sys
import types

import mlx.core as mx
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


def test_quantize_flag_matches_the_exported_int4_model(tiny_qat, tmp_path, tokenizer_dir):
    """--quantize rtn|mse quantizes a float checkpoint in memory exactly as the export CLI
    writes it (same greedy text), and refuses a checkpoint that is already int4."""
    import official
    from conftest import add_tokenizer
    from mlx_mobilemoe.export import export_folder

    bf16 = tmp_path / "bf16"
    official.write_checkpoint(bf16, official.TINY, qat=False, seed=2)
    add_tokenizer(bf16, tokenizer_dir)
    for method in ("rtn", "mse"):
        exported = export_folder(bf16, tmp_path / f"int4-{method}", method)
        args = ("--prompt", "Speak", "--max-tokens", "12", "--temp", "0")
        a = run_cli("--model", str(bf16), "--quantize", method, *args)
        b = run_cli("--model", str(exported), *args)
        c = run_cli("--model", str(bf16), *args)
        assert a.returncode == b.returncode == c.returncode == 0, a.stderr + b.stderr
        assert a.stdout == b.stdout, method
        assert a.stdout != c.stdout or method == "mse"  # rtn moves these random weights a lot
    r = run_cli("--model", str(tiny_qat[0]), "--quantize", "rtn", "--prompt", "x")
    assert r.returncode == 2 and "already int4" in r.stderr


def test_verbose_names_the_moe_path(tiny_qat, monkeypatch):
    from mlx_mobilemoe.kernels import moe as kernel_op
    r = run_cli("--model", str(tiny_qat[0]), "--prompt", "x", "--max-tokens", "2", "--verbose")
    assert "[MoE: plain MLX (no Metal/CUDA device)]" in r.stderr
    model, _ = load(tiny_qat[0])
    moe = model.layers[0].feed_forward
    monkeypatch.setattr(kernel_op, "gpu_backend", lambda: "cuda")
    assert moe.plan(mx.float32).why == "fused int4 kernels (cuda)"
    assert moe.plan(mx.bfloat16).why.startswith("plain MLX (")
    from mlx_mobilemoe import Model, preset
    assert "need int4" in Model(preset("tiny")).layers[0].feed_forward.plan(mx.float32).why


BAD_ARGS = [("--temp", "nan"), ("--temp", "inf"), ("--temp", "-1"), ("--top-p", "nan"),
            ("--top-p", "0"), ("--top-p", "5"), ("--top-k", "-3"), ("--max-tokens", "-5"),
            ("--max-tokens", "0"), ("--prompt", ""), ("--prompt", "a\udcff"), ("--seed", "-1"),
            ("--experts-per-token", "0"), ("--system", "  ")]


@pytest.mark.parametrize("flag,value", BAD_ARGS, ids=[f"{f}={v!r}" for f, v in BAD_ARGS])
def test_bad_cli_values_are_argparse_errors(flag, value, capsys):
    from mlx_mobilemoe.generate import build_parser
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([flag, value])
    assert e.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_float16_on_cpu_and_invalid_utf8_prompt_are_clear_errors(tiny_qat, tmp_path,
                                                                 tokenizer_dir):
    import official
    from conftest import add_tokenizer
    bf16 = tmp_path / "bf16"
    official.write_checkpoint(bf16, official.TINY, qat=False, seed=2)
    add_tokenizer(bf16, tokenizer_dir)
    r = run_cli("--model", str(bf16), "--dtype", "float16", "--prompt", "x")
    assert r.returncode == 2 and "float16 cannot run" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable.encode(), b"-m", b"mlx_mobilemoe.generate", b"--prompt",
                        b"caf\xe9"], capture_output=True, timeout=120)
    assert r.returncode == 2 and b"not valid UTF-8" in r.stderr


def test_repl_survives_invalid_utf8_and_template_refusals(tiny_qat):
    r = subprocess.run([sys.executable, "-m", "mlx_mobilemoe.generate", "--model",
                        str(tiny_qat[0]), "--max-tokens", "3", "--temp", "0"],
                       input=b"hello\n\xff\xfe bad\nspeak\n/quit\n", capture_output=True,
                       timeout=300)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert "not valid UTF-8" in err and err.count("generation: 3 tokens") == 2


def test_token_ids_are_checked_where_they_enter_the_model(tiny_qat):
    from mlx_mobilemoe.generate import TokenIdError, check_token_ids
    check_token_ids([0, 5, 319], 320)
    for bad in ([320], [-1], [5, 10 ** 9]):
        with pytest.raises(TokenIdError, match="outside the model's vocabulary"):
            check_token_ids(bad, 320)
    model, tok = load(tiny_qat[0])
    opts = types.SimpleNamespace(temp=0.0, top_p=1.0, top_k=0, system=None, raw=True,
                                 max_tokens=2)
    s = Session(model, tok, opts)
    model.args.vocab_size = 100  # as if the tokenizer produced ids past the embedding
    with pytest.raises(TokenIdError):
        s.reply("speak speak speak")
    assert s.messages == []
