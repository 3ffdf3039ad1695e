"""Train a byte-level BPE tokenizer and write it as tokenizer.json + tokenizer_config.json.

Same format as the official Llama 3 tokenizer (ByteLevel with the Llama 3 split pattern), so
one runtime format serves the official models, ours, Python and the Swift package.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Iterable, Optional

BOS, EOS, EOT, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|pad|>"
HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"
SPECIAL_TOKENS = [BOS, EOS, HEADER_START, HEADER_END, EOT, PAD]

# Llama 3's pre-tokenizer split.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Llama 3 style chat template (the subset the Swift package renders natively).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] "
    "+ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir,
                    chat_template: Optional[str] = CHAT_TEMPLATE,
                    split_pattern: str = SPLIT_PATTERN) -> Path:
    """Train byte-level BPE on `texts`; special tokens take the first ids (0..5)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "add_bos_token": False, "model_max_length": 131072, "clean_up_tokenization_spaces": False,
    }
    if chat_template:
        cfg["chat_template"] = chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out


def special_ids(tokenizer_json) -> dict:
    """{token: id} of the special tokens in a tokenizer.json."""
    d = json.loads(Path(tokenizer_json).read_text())
    return {t["content"]: t["id"] for t in d.get("added_tokens", []) if t.get("special")}


# --- chat templates -----------------------------------------------------------------------

MAX_TEMPLATE_CHARS = 64 * 1024  # the released template is ~0.5 KB; Llama 3.1's ~4 KB
MAX_RENDER_CHARS = 16 * 1024 * 1024  # one rendered conversation
RENDER_SECONDS = 2.0  # one render, wall clock (checked where a timer can interrupt Python)


class ChatTemplateError(ValueError):
    """A chat template that cannot be compiled or rendered."""


def _sandbox():
    """A Jinja sandbox like transformers' (immutable, trim_blocks, lstrip_blocks) whose `*`,
    `**` and string/list results are bounded, so a hostile template cannot exhaust memory."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Env(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):
            if operator == "**":
                if isinstance(right, (int, float)) and abs(right) > 64:
                    raise ChatTemplateError("chat template computes a power above 64")
                return left ** right
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    if len(seq) * max(n, 0) > MAX_RENDER_CHARS:
                        raise ChatTemplateError("chat template builds a string or list larger "
                                                f"than {MAX_RENDER_CHARS} items")
            return left * right

    def raise_exception(message):
        raise ChatTemplateError(f"chat template refused the conversation: {message}")

    def strftime_now(fmt):
        import datetime
        return datetime.datetime.now().strftime(fmt)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = Env(trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.filters["tojson"] = tojson
    return env


@functools.lru_cache(maxsize=16)
def _compile(source: str):
    """The compiled template of a source (compiling costs ~30 ms; sessions reload the same
    few templates)."""
    from jinja2 import TemplateError
    try:
        return _sandbox().from_string(source)
    except (TemplateError, RecursionError, MemoryError) as e:
        raise ChatTemplateError(f"chat_template does not compile: {e}") from None


class ChatTemplate:
    """A chat template compiled once (at load) and rendered in a bounded sandbox; callable
    the way mlx-lm's TokenizerWrapper calls a custom `chat_template`."""

    def __init__(self, source: str, special: dict):
        if not isinstance(source, str):
            raise ChatTemplateError(f"chat_template must be a string, got "
                                    f"{type(source).__name__}")
        if len(source) > MAX_TEMPLATE_CHARS:
            raise ChatTemplateError(f"chat_template has {len(source)} characters, more than "
                                    f"the {MAX_TEMPLATE_CHARS} this loader accepts")
        self._template = _compile(source)
        self.source = source
        self.special = {k: v for k, v in special.items() if isinstance(v, str)}

    def __call__(self, messages, add_generation_prompt: bool = False, **kwargs) -> str:
        from jinja2 import TemplateError
        kwargs.pop("tokenize", None)
        kwargs.pop("tools", None)
        try:
            with _time_limit(RENDER_SECONDS):
                out = self._template.render(messages=messages,
                                            add_generation_prompt=add_generation_prompt,
                                            **self.special, **kwargs)
        except ChatTemplateError:
            raise
        except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError,
                ZeroDivisionError, OverflowError, RecursionError, MemoryError) as e:
            raise ChatTemplateError(f"chat template failed to render: "
                                    f"{type(e).__name__}: {e}") from None
        if len(out) > MAX_RENDER_CHARS:
            raise ChatTemplateError(f"chat template rendered {len(out)} characters")
        return out

    def check(self) -> None:
        """Render a probe conversation (user, assistant, user + generation prompt): a
        template that cannot render it is refused at load, not at the first message."""
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                 {"role": "user", "content": "bye"}]
        out = self(probe, add_generation_prompt=True)
        if "hi" not in out or "bye" not in out:
            raise ChatTemplateError("chat template does not render the message contents")


class _Timeout(BaseException):
    pass


class _time_limit:
    """SIGALRM-based wall-clock bound on pure-Python work in the main thread (no-op
    elsewhere: signals reach only the main thread). An outer timer (ITIMER_REAL) that is
    already running is suspended and re-armed afterwards with the time it had left."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.armed = False

    def __enter__(self):
        import signal
        import threading
        import time
        if threading.current_thread() is not threading.main_thread() or \
                not hasattr(signal, "setitimer"):
            return self

        def on_alarm(signum, frame):
            raise _Timeout()

        self.start = time.monotonic()
        self.outer = signal.getitimer(signal.ITIMER_REAL)[0]
        self.old = signal.signal(signal.SIGALRM, on_alarm)
        limit = self.seconds if not self.outer else min(self.seconds, self.outer)
        signal.setitimer(signal.ITIMER_REAL, limit)
        self.armed = True
        return self

    def __exit__(self, exc_type, exc, tb):
        import signal
        import time
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
            if self.outer:
                left = self.outer - (time.monotonic() - self.start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))
        if exc_type is _Timeout:
            raise ChatTemplateError(f"chat template took more than {self.seconds:g} s to "
                                    "render (or the caller's time limit ran out)") from None
        return False
