"""Chat with a MobileMoE model: `python -m mlx_mobilemoe.generate [--model PATH|HF_ID]`.

One-shot with --prompt (`--prompt -` reads it from standard input), otherwise an interactive
chat (type /help for its commands). Generation, sampling, speculative decoding and the KV
cache are mlx-lm's; the chat keeps the cache across turns and feeds only the tokens that are
new since the last turn. Every answer ends with a stats line that says why it stopped.
mlx-lm's other tools (server, batch generation, prompt-cache files, LoRA training, evaluation)
run on MobileMoE checkpoints through `python -m mlx_mobilemoe.lm <command>`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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


def _ranged(parse, ok, rule: str):
    """An argparse type: `parse` the text, then require `ok(value)`, else say `rule`."""
    def check(text: str):
        v = parse(text)
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{text}: {rule}")
        return v
    return check


temperature = _ranged(_finite, lambda v: v >= 0, "the temperature must be >= 0 (0 = greedy)")
top_p = _ranged(_finite, lambda v: 0 < v <= 1, "top-p must be in (0, 1] (1 = off)")
min_p = _ranged(_finite, lambda v: 0 <= v < 1, "min-p must be in [0, 1) (0 = off)")
penalty = _ranged(_finite, lambda v: v > 0, "the penalty must be > 0 (1 = off)")
non_negative_int = _ranged(_int, lambda v: v >= 0, "must be >= 0")
positive_int = _ranged(_int, lambda v: v >= 1, "must be >= 1")
seed = _ranged(_int, lambda v: 0 <= v < 2 ** 64, "the seed must be in 0..2**64-1")


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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (unless the help names it); the description
    kept as written."""

    def _get_help_string(self, action):
        h = action.help or ""
        d = action.default
        if not any(d is x for x in (None, False, argparse.SUPPRESS)) and "default" not in h:
            h += " (default: %(default)s)"
        return h


def prompt_text(text: str) -> str:
    """--prompt: the text, or `-` for standard input."""
    if text == "-":
        text = sys.stdin.buffer.read().decode("utf-8", errors="surrogateescape")
    return valid_text(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mlx_mobilemoe.generate", description=__doc__,
                                formatter_class=_HelpFormatter)
    p.add_argument("--model", help="checkpoint folder, Hugging Face cache folder or Hugging "
                   "Face id (default: the bundled model)")
    p.add_argument("--revision", default=None,
                   help="Hugging Face commit, branch or tag to load (default: main)")
    p.add_argument("--adapter-path", default=None,
                   help="LoRA adapters trained with `python -m mlx_mobilemoe.lm lora`")
    p.add_argument("--prompt", type=prompt_text,
                   help="one-shot prompt ('-' reads standard input); without it, a chat")
    p.add_argument("--system", "--system-prompt", dest="system", type=valid_text,
                   help="system message (models whose chat template renders one)")
    p.add_argument("--raw", action="store_true",
                   help="use the prompt as plain text even if the tokenizer has a chat template")
    p.add_argument("--max-tokens", "-m", type=positive_int, default=256,
                   help="most tokens to generate per answer")
    p.add_argument("--temp", type=temperature, default=0.7,
                   help="sampling temperature (0 = greedy)")
    p.add_argument("--top-p", type=top_p, default=1.0,
                   help="nucleus sampling: keep the smallest set of tokens with this much "
                        "probability (1 = off)")
    p.add_argument("--top-k", type=non_negative_int, default=0,
                   help="keep only the k most likely tokens (0 = off)")
    p.add_argument("--min-p", type=min_p, default=0.0,
                   help="drop tokens less likely than this fraction of the most likely (0 = off)")
    p.add_argument("--repetition-penalty", type=penalty, default=None,
                   help="divide the logits of recently generated tokens by this (1 = off)")
    p.add_argument("--seed", type=seed, default=None,
                   help="random seed for sampling (default: a fresh one each run)")
    p.add_argument("--experts-per-token", type=positive_int, default=None,
                   help="override top-k routing at inference (adaptive compute)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="activation dtype (default: float32 on a CPU; on a GPU float16 for "
                        "int4 checkpoints, the checkpoint's own dtype for float ones)")
    p.add_argument("--kv-bits", type=int, choices=[4, 8], default=None,
                   help="quantize the KV cache from the first token (mlx-lm QuantizedKVCache)")
    p.add_argument("--max-kv-size", type=positive_int, default=None,
                   help="keep at most this many tokens in the KV cache (a rotating window: "
                        "older context is forgotten instead of ending the chat)")
    p.add_argument("--draft-model", default=None,
                   help="a smaller MobileMoE that proposes tokens for speculative decoding")
    p.add_argument("--num-draft-tokens", type=positive_int, default=3,
                   help="tokens the draft model proposes per step")
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
    """The chat template when the tokenizer has one (and not --raw), else the plain text
    (with BOS when tokenizer_config.json's add_bos_token is true)."""
    has_template = getattr(tokenizer, "has_chat_template", None)  # mlx-lm's wrapper
    if has_template is None:  # a plain transformers tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
    if raw or not has_template:
        text = "\n\n".join(m["content"] for m in messages if m["role"] != "system")
        add_bos = getattr(tokenizer, "_add_bos_token", None)  # set by load_tokenizer
        if add_bos is None:
            return tokenizer.encode(text)  # the tokenizer's own post-processor decides
        ids = tokenizer.encode(text, add_special_tokens=False)
        bos = tokenizer.bos_token_id
        if add_bos and bos is not None:
            ids = [bos] + ids  # BOS exactly when tokenizer_config.json's add_bos_token says
        return ids
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)


def check_context(n_prompt: int, max_tokens: int, context: int) -> int:
    """Tokens we may generate; a prompt that does not fit is an error, not a truncation."""
    if n_prompt >= context:
        raise ContextError(f"prompt is {n_prompt} tokens but the model's context is {context} "
                           "tokens; shorten it (or /reset the chat)")
    return min(max_tokens, context - n_prompt)


def renders_system(tokenizer, raw: bool) -> bool:
    """Whether a system message changes the prompt (a template may silently drop it)."""
    if raw:
        return False
    user = [{"role": "user", "content": "x"}]
    try:
        return prompt_tokens(tokenizer, [{"role": "system", "content": "s"}] + user, raw) \
            != prompt_tokens(tokenizer, user, raw)
    except ValueError:  # a template that refuses system messages
        return False


STOP_REASONS = {"stop": "end of turn", "length": "max tokens"}


class Session:
    """A conversation whose KV cache persists across turns."""

    def __init__(self, model, tokenizer, args, draft_model=None):
        from mlx_lm.models.cache import make_prompt_cache
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        self.model, self.tokenizer, self.args = model, tokenizer, args
        self.sampler = make_sampler(temp=args.temp, top_p=args.top_p, top_k=args.top_k,
                                    min_p=getattr(args, "min_p", 0.0))
        self.processors = make_logits_processors(
            repetition_penalty=getattr(args, "repetition_penalty", None))
        self.draft = draft_model
        size = getattr(args, "max_kv_size", None)
        self._make_cache = lambda: make_prompt_cache(model, max_kv_size=size) + (
            make_prompt_cache(draft_model, max_kv_size=size) if draft_model else [])
        self.kv_options = kv_cache_options(args, model.args.head_dim)
        if draft_model is not None:
            self.kv_options.update(draft_model=draft_model,
                                   num_draft_tokens=getattr(args, "num_draft_tokens", 3))
        self.reset()

    def reset(self, messages=None):
        """Start over (with `messages` as the history, e.g. a loaded chat)."""
        self.messages = list(messages) if messages is not None else (
            [{"role": "system", "content": self.args.system}] if self.args.system else [])
        self.cache = self._make_cache()
        self.cached_tokens = []  # exactly the tokens whose keys/values are in the cache

    def warm_up(self):
        """Run the model once on a throwaway cache, so the first answer's stats line measures
        speed rather than one-time set-up (allocation, kernel compilation)."""
        from mlx_lm import stream_generate
        for _ in stream_generate(self.model, self.tokenizer, [0] * 8, max_tokens=2,
                                 sampler=self.sampler, prompt_cache=self._make_cache(),
                                 **self.kv_options):
            pass

    def reply(self, user_text: str, out=None):
        """Generate the answer to `user_text`, streaming it to `out` (default: the current
        sys.stdout, looked up at call time so redirection works). The last response carries
        `stop_reason`: end of turn, max tokens or context full."""
        from mlx_lm import stream_generate
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

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
        drop = len(self.cached_tokens) - common
        if drop and not can_trim_prompt_cache(self.cache):  # a rotated --max-kv-size window
            self.cache, self.cached_tokens, common, drop = self._make_cache(), [], 0, 0
        trim_prompt_cache(self.cache, drop)
        new = tokens[common:]
        text, generated, last = "", [], None
        for r in stream_generate(self.model, self.tokenizer, new, max_tokens=max_tokens,
                                 sampler=self.sampler, logits_processors=self.processors,
                                 prompt_cache=self.cache, **self.kv_options):
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
            reason = STOP_REASONS.get(last.finish_reason, str(last.finish_reason))
            if last.finish_reason == "length" and max_tokens < self.args.max_tokens:
                reason = "context full"
            last.stop_reason = reason
        return last

    def save(self, path) -> None:
        Path(path).write_text(json.dumps({"messages": self.messages}, indent=2,
                                         ensure_ascii=False) + "\n")

    def load(self, path) -> None:
        """Continue a chat saved with /save (its whole history is prefilled at the next turn)."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{path}: cannot read a saved chat ({e})") from None
        msgs = d.get("messages") if isinstance(d, dict) else None
        if not isinstance(msgs, list) or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str) for m in msgs):
            raise ValueError(f"{path}: not a saved chat ({{\"messages\": [{{role, content}}]}})")
        self.reset(msgs)


def stats_line(r) -> str:
    stop = getattr(r, "stop_reason", None)
    return (f"[prompt: {r.prompt_tokens} tokens, {r.prompt_tps:.1f} tok/s | "
            f"generation: {r.generation_tokens} tokens, {r.generation_tps:.1f} tok/s | "
            f"peak memory: {r.peak_memory:.3f} GB" + (f" | stop: {stop}]" if stop else "]"))


HELP = """commands:
  /help         this list
  /reset        forget the conversation (the system message stays)
  /save FILE    write the conversation to FILE (JSON)
  /load FILE    continue a conversation saved with /save
  /quit         exit (also /exit, /q, Ctrl-D)
anything else is sent to the model; Ctrl-C stops an answer."""


def command(session, line: str) -> bool:
    """Run a /command typed into the chat; False when the line is not one (it goes to the
    model). Unknown /words are reported, not sent."""
    cmd, _, arg = line.strip().partition(" ")
    if not cmd.startswith("/") or cmd.count("/") != 1:
        return False
    arg = arg.strip()
    if cmd == "/help":
        print(HELP, file=sys.stderr)
    elif cmd == "/reset":
        session.reset()
        print("[conversation cleared]", file=sys.stderr)
    elif cmd in ("/save", "/load"):
        if not arg:
            print(f"error: {cmd} needs a file name", file=sys.stderr)
        else:
            try:
                if cmd == "/save":
                    session.save(arg)
                    print(f"[saved {len(session.messages)} messages to {arg}]", file=sys.stderr)
                else:
                    session.load(arg)
                    print(f"[loaded {len(session.messages)} messages from {arg}]",
                          file=sys.stderr)
            except (OSError, ValueError) as e:
                print(f"error: {e}", file=sys.stderr)
    else:
        print(f"error: unknown command {cmd} (/help lists them)", file=sys.stderr)
    return True


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError, check_dtype, default_dtype, load
    from .runtime import fast_blas
    fast_blas(argv)  # from the shell: may restart with a faster BLAS
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
        draft = None
        if args.draft_model is not None:
            draft, draft_tok = load(args.draft_model, dtype=model.compute_dtype)
            if draft_tok.vocab_size != tokenizer.vocab_size:
                raise CheckpointError("--draft-model: its tokenizer differs from the model's "
                                      f"({draft_tok.vocab_size} vs {tokenizer.vocab_size} ids)")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.adapter_path is not None:
        from mlx_lm.tuner.utils import load_adapters
        try:
            model = load_adapters(model, args.adapter_path)
        except (OSError, KeyError, ValueError) as e:
            print(f"error: --adapter-path {args.adapter_path}: {e}", file=sys.stderr)
            return 2
        model.eval()
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
        session = Session(model, tokenizer, args, draft_model=draft)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.system and not renders_system(tokenizer, args.raw):
        print("note: --system has no effect: " + (
            "--raw prompts have no system turn" if args.raw else
            "this model's chat template does not render system messages" if
            getattr(tokenizer, "has_chat_template", False) else
            "this model has no chat template (a base model takes plain text)"),
            file=sys.stderr)
    session.warm_up()

    if args.prompt is not None:
        try:
            r = session.reply(args.prompt)
        except ValueError as e:  # context, token ids, the chat template's refusal
            print(f"error: {e}", file=sys.stderr)
            return 2
        if r is not None:
            print(stats_line(r), file=sys.stderr)
        return 0

    print("MobileMoE chat. /help lists the commands, /quit exits.", file=sys.stderr)
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
        if line.strip() in ("/quit", "/exit", "/q"):
            return 0
        if not line.strip() or command(session, line):
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
