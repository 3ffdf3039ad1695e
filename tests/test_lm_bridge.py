"""mlx-lm's own tools on MobileMoE folders through `python -m mlx_mobilemoe.lm` (issue 15):
generate, server (one streamed chat completion over loopback), lora + --adapter-path, and
perplexity. Tiny checkpoints in the official QAT layout, written by the independent writer."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lm(*args, timeout=240, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRANSFORMERS_VERBOSITY="error")
    return subprocess.run([sys.executable, "-m", "mlx_mobilemoe.lm", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
                          **kw)


def ok(r):
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


def test_python_api_mlx_lm_load(tiny_qat):
    import mlx.core as mx
    import mlx_lm

    from mlx_mobilemoe import load
    from mlx_mobilemoe.lm import register

    folder, _ = tiny_qat
    register()
    model, tok = mlx_lm.load(str(folder))
    ours, _ = load(folder)
    x = mx.array([[1, 5, 9, 2]])
    assert mx.array_equal(model(x), ours(x)).item()  # the same loader behind both
    assert set(tok.eos_token_ids) == set(ours.args.eos_token_ids)
    text = mlx_lm.generate(model, tok, prompt="hi", max_tokens=3)
    assert isinstance(text, str)


@pytest.mark.parametrize("qat", [True, False], ids=["qat", "bf16"])
def test_mlx_lm_generate_cli(qat, tmp_path, tokenizer_dir):
    import official
    from conftest import add_tokenizer

    folder = tmp_path / "ckpt"
    official.write_checkpoint(folder, official.TINY, qat=qat, seed=3)
    add_tokenizer(folder, tokenizer_dir)
    out = ok(lm("generate", "--model", folder, "--prompt", "hello", "--max-tokens", "4",
                "--temp", "0"))
    assert "Generation: " in out and "tokens-per-sec" in out


def test_mlx_lm_lora_then_adapter_path(tiny_qat, tmp_path):
    folder, _ = tiny_qat
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"text": "First Citizen: Before we proceed any further, hear me speak."}] * 8
    for split in ("train", "valid", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    adapters = tmp_path / "adapters"
    ok(lm("lora", "--model", folder, "--train", "--data", data, "--iters", "2",
          "--batch-size", "2", "--num-layers", "1", "--adapter-path", adapters,
          "--steps-per-report", "1", "--val-batches", "1"))
    assert (adapters / "adapters.safetensors").exists()
    out = ok(lm("generate", "--model", folder, "--adapter-path", adapters, "--prompt", "hi",
                "--max-tokens", "3", "--temp", "0"))
    assert "Generation: " in out
    # mlx-lm's evaluation of the adapted model on the local test split (loss and perplexity)
    out = ok(lm("lora", "--model", folder, "--data", data, "--test", "--adapter-path",
                adapters, "--test-batches", "1", "--batch-size", "2"))
    assert "Test loss" in out and "Test ppl" in out


def test_mlx_lm_perplexity(tiny_qat, tmp_path):
    pytest.importorskip("datasets", reason="mlx-lm perplexity reads data through `datasets` "
                        "(a dev dependency)")
    folder, _ = tiny_qat
    data = tmp_path / "ppl"
    data.mkdir()
    row = {"text": "All: Speak, speak. You are all resolved rather to die than to famish? " * 4}
    (data / "train.jsonl").write_text((json.dumps(row) + "\n") * 6)
    out = ok(lm("perplexity", "--model", folder, "--data-path", data, "--sequence-length",
                "32", "--num-samples", "4", "--batch-size", "2"))
    assert "Perplexity: " in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlx_lm_server_streams_a_chat_completion(tiny_qat):
    folder, _ = tiny_qat
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.Popen([sys.executable, "-m", "mlx_mobilemoe.lm", "server", "--model",
                             str(folder), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                           "temperature": 0, "stream": True}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                     data=body, headers={"Content-Type": "application/json"})
        deadline, resp = time.time() + 120, None
        while resp is None:
            try:
                resp = urllib.request.urlopen(req, timeout=60)
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(proc.stdout.read().decode()[-3000:])
                time.sleep(0.5)
        events = [ln[6:] for ln in resp.read().decode().splitlines() if ln.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
