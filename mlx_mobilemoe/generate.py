"""Chat with a MobileMoE model: `python -m mlx_mobilemoe.generate [--model PATH|HF_ID]`.

One-shot with --prompt, otherwise an interactive REPL (/reset, /quit). Generation, sampling
and the KV cache are mlx-lm's; the REPL keeps the cache across turns and feeds only the
tokens that are new since the last turn.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import mlx.core as mx  # noqa: E402

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


class ContextError(ValueError):
    pass


class TokenIdError(ValueError):
    """A token id outside the model's vocabulary (it would read past the embedding)."""


def check_token_ids(tokens, vocab_size: int) -> None:
    """Every id in 0..vocab_size-1: MLX does not bounds-check an embedding gather (an id >=
    vocab_size reads out of bounds and can crash the process), so ids are checked where they
    enter the model."""
    bad = [t for t in tokens if not isinstance(t, int) or isinstance(t, bool)
           or not 0 <= t < vocab_size]
    if bad:
        raise TokenIdError(f"token id(s) {bad[:5]} outside the model's vocabulary "
                           f"0..{vocab_size - 1}")


# --- argument types: bad values are argparse errors (exit 2, usage line), not tracebacks ---

def _finite(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def temperature(text: str) -> float:
    v = _finite(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text}: the temperature must be >= 0 (0 = greedy)")
    return v


def top_p(text: str) -> float:
    v = _finite(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{text}: top-p must be in (0, 1] (1 = off)")
    return v


def non_negative_int(text: str) -> int:
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 0")
    return v


def positive_int(text: str) -> int:
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 1")
    return v


def seed(text: str) -> int:
    v = _int(text)
    if not 0 <= v < 2 ** 64:
        raise argparse.ArgumentTypeError(f"{text}: the seed must be in 0..2**64-1")
    return v


def valid_text(text: str) -> str:
    """Text typed on a command line or into the REPL: valid UTF-8 (Python hands invalid bytes
    over as lone surrogates) and not empty."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("not valid UTF-8 text") from None
    if not text.strip():
        raise argparse.ArgumentTypeError("empty text")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mlx_mobilemoe.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint folder, Hugging Face cache folder or Hugging "
                   "Face id (default: the bundled model)")
    p.add_argument("--revision", default=None,
                   help="Hugging Face commit, branch or tag to load (default: main)")
    p.add_argument("--prompt", type=valid_text,
                   help="one-shot prompt; without it, an interactive chat")
    p.add_argument("--system", type=valid_text, help="system message (chat template models)")
    p.add_argument("--raw", action="store_true",
                   help="use the prompt as plain text even if the tokenizer has a chat template")
    p.add_argument("--max-tokens", type=positive_int, default=256)
    p.add_argument("--temp", type=temperature, default=0.7)
    p.add_argument("--top-p", type=top_p, default=1.0)
    p.add_argument("--top-k", type=non_negative_int, default=0, help="0 = off")
    p.add_argument("--seed", type=seed, default=None)
    p.add_argument("--experts-per-token", type=positive_int, default=None,
                   help="override top-k routing at inference (adaptive compute)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="activation dtype (default: float32 on a CPU; on a GPU float16 for "
                        "int4 checkpoints, the checkpoint's own dtype for float ones)")
    p.add_argument("--kv-bits", type=int, choices=[4, 8], default=None,
                   help="quantize the KV cache from the first token (mlx-lm QuantizedKVCache)")
    p.add_argument("--quantize", choices=["rtn", "mse"], default=None,
                   help="quantize a float checkpoint to int4 g32 after loading (post-training: "
                        "round to nearest or MSE scale search), the format the fused kernels "
                        "run on a GPU; `python -m mlx_mobilemoe.export` writes it to disk")
    p.add_argument("--verbose", action="store_true",
                   help="say which MoE path runs (fused kernels or plain MLX) and why")
    return p


def kv_cache_options(args, head_dim: int) -> dict:
    """stream_generate kwargs for --kv-bits: groups of 64 (32 when head_dim needs it), and
    quantized from the start (mlx-lm's default waits for 5000 tokens)."""
    bits = getattr(args, "kv_bits", None)
    if bits is None:
        return {}
    group = next((g for g in (64, 32) if head_dim % g == 0), None)
    if group is None:
        raise ValueError(f"--kv-bits needs head_dim a multiple of 32, got {head_dim}")
    return dict(kv_bits=bits, kv_group_size=group, quantized_kv_start=0)


def prompt_tokens(tokenizer, messages, raw: bool) -> list:
    """The chat template when the tokenizer has one (and not --raw), else the plain text."""
    if raw or not getattr(tokenizer, "chat_template", None):
        text = "\n\n".join(m["content"] for m in messages if m["role"] != "system")
        return tokenizer.encode(text)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)


def check_context(n_prompt: int, max_tokens: int, context: int) -> int:
    """Tokens we may generate; a prompt that does not fit is an error, not a truncation."""
    if n_prompt >= context:
        raise ContextError(f"prompt is {n_prompt} tokens but the model's context is {context} "
                           "tokens; shorten it (or /reset the chat)")
    return min(max_tokens, context - n_prompt)


class Session:
    """A conversation whose KV cache persists across turns."""

    def __init__(self, model, tokenizer, args):
        from mlx_lm.models.cache import make_prompt_cache
        from mlx_lm.sample_utils import make_sampler

        self.model, self.tokenizer, self.args = model, tokenizer, args
        self.sampler = make_sampler(temp=args.temp, top_p=args.top_p, top_k=args.top_k)
        self._make_cache = lambda: make_prompt_cache(model)
        self.kv_options = kv_cache_options(args, model.args.head_dim)
        self.reset()

    def reset(self):
        self.messages = [{"role": "system", "content": self.args.system}] \
            if self.args.system else []
        self.cache = self._make_cache()
        self.cached_tokens = []  # exactly the tokens whose keys/values are in the cache

    def reply(self, user_text: str, out=None):
        """Generate the answer to `user_text`, streaming it to `out` (default: the current
        sys.stdout, looked up at call time so redirection works)."""
        from mlx_lm import stream_generate
        from mlx_lm.models.cache import trim_prompt_cache

        out = sys.stdout if out is None else out

        self.messages.append({"role": "user", "content": user_text})
        try:
            tokens = prompt_tokens(self.tokenizer, self.messages, self.args.raw)
            check_token_ids(tokens, self.model.args.vocab_size)
            max_tokens = check_context(len(tokens), self.args.max_tokens,
                                       self.model.args.max_position_embeddings)
        except ValueError:  # ContextError, TokenIdError, a template's refusal
            self.messages.pop()
            raise
        # Reuse the cached prefix; recompute from the first token that differs.
        common = 0
        for a, b in zip(self.cached_tokens, tokens):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # always feed at least one token
        trim_prompt_cache(self.cache, len(self.cached_tokens) - common)
        new = tokens[common:]
        text, generated, last = "", [], None
        for r in stream_generate(self.model, self.tokenizer, new, max_tokens=max_tokens,
                                 sampler=self.sampler, prompt_cache=self.cache,
                                 **self.kv_options):
            out.write(r.text)
            out.flush()
            text += r.text
            generated.append(r.token)
            last = r
        out.write("\n")
        out.flush()
        processed = tokens + generated
        self.cached_tokens = processed[: self.cache[0].offset]
        trim_prompt_cache(self.cache, self.cache[0].offset - len(self.cached_tokens))
        self.messages.append({"role": "assistant", "content": text})
        if last is not None:
            last.prompt_tokens = len(tokens)  # the whole prompt, cached part included
        return last


def stats_line(r) -> str:
    return (f"[prompt: {r.prompt_tokens} tokens, {r.prompt_tps:.1f} tok/s | "
            f"generation: {r.generation_tokens} tokens, {r.generation_tps:.1f} tok/s | "
            f"peak memory: {r.peak_memory:.3f} GB]")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError, check_dtype, default_dtype, load

    dtype = DTYPES[args.dtype] if args.dtype else None
    try:
        # --quantize: load in float32 (any device runs it), quantize, then pick the dtype.
        model, tokenizer = load(args.model, dtype=mx.float32 if args.quantize else dtype,
                                revision=args.revision, verify=args.verbose)
        if args.quantize:
            if model.args.is_quantized:
                raise CheckpointError(f"--quantize: {args.model or 'the model'} is already int4")
            from .qat import ptq
            ptq(model, args.quantize)
            if dtype is None:
                dtype = default_dtype(model.args)
            check_dtype(model.args, dtype)
            model.set_dtype(dtype)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dtype = model.compute_dtype
    if args.verbose:
        name = {v: k for k, v in DTYPES.items()}[dtype]
        print(f"[dtype: {name} | weights: all finite]", file=sys.stderr)
        print(f"[MoE: {model.layers[0].feed_forward.plan(dtype).why}]", file=sys.stderr)
    if args.experts_per_token is not None:
        try:
            model.set_experts_per_token(args.experts_per_token)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.seed is not None:
        mx.random.seed(args.seed)
    try:
        session = Session(model, tokenizer, args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.prompt is not None:
        try:
            r = session.reply(args.prompt)
        except ValueError as e:  # context, token ids, the chat template's refusal
            print(f"error: {e}", file=sys.stderr)
            return 2
        if r is not None:
            print(stats_line(r), file=sys.stderr)
        return 0

    print("MobileMoE chat. /reset clears the conversation, /quit exits.", file=sys.stderr)
    if hasattr(sys.stdin, "reconfigure"):  # invalid UTF-8 typed in: refuse the line, not exit
        sys.stdin.reconfigure(errors="surrogateescape")
    while True:
        try:
            line = input(">> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            print("error: that line is not valid UTF-8 text; ignored", file=sys.stderr)
            continue
        cmd = line.strip()
        if cmd in ("/quit", "/exit", "/q"):
            return 0
        if cmd == "/reset":
            session.reset()
            print("[conversation cleared]", file=sys.stderr)
            continue
        if not cmd:
            continue
        try:
            r = session.reply(line)
        except ValueError as e:  # context, token ids, the chat template's refusal
            print(f"error: {e}", file=sys.stderr)
            continue
        except KeyboardInterrupt:
            print("\n[interrupted]", file=sys.stderr)
            continue
        if r is not None:
            print(stats_line(r), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
