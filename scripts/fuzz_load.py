"""Fuzz the checkpoint loader: mutated safetensors headers and bytes, config.json, index and
tokenizer files, and odd file types (FIFO, directory, /dev/zero), each case through
`mlx_mobilemoe.load(folder, verify=True)`.

    python scripts/fuzz_load.py --cases 500                 # CI size (tests/test_fuzz_load.py)
    python scripts/fuzz_load.py --long                      # 100,000 cases, progress + ETA

Every case ends as one of: ok (loaded), named (CheckpointError / ConfigError /
TokenizerError), unexpected (any other exception), hang (no answer within --timeout seconds:
the worker is killed) or crash (the worker process died, e.g. a segfault). Cases run in
worker processes (--workers) so hangs and crashes are caught and counted; they are
deterministic in (--seed, case number). Prints one JSON summary on stdout (with up to 20
examples of each bad outcome, enough to replay: `--replay N`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

CORPUS = ("First Citizen: Before we proceed any further, hear me speak.\n"
          "All: Speak, speak. You are all resolved rather to die than to famish?\n"
          "def main(argv):\n    return sum(x * 2 for x in range(10))\n"
          "Ünïcödé café naïve 日本語 😀\n") * 20

BASES = ("qat", "bf16-sharded")
FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
         "generation_config.json", "model.safetensors.index.json")


# --- base checkpoints -------------------------------------------------------------------------

def make_bases(root: Path) -> dict:
    """Two tiny valid folders, written by the package itself: int4 single-file, BF16 sharded."""
    import mlx.core as mx

    from mlx_mobilemoe import Model, preset, save
    from mlx_mobilemoe.model import quantize_model
    from mlx_mobilemoe.tokenizer import train_tokenizer

    mx.random.seed(0)
    tok = train_tokenizer([CORPUS], 320, root / "tok")
    out = {}
    for name in BASES:
        model = Model(preset("tiny"))
        if name == "qat":
            quantize_model(model)
        folder = root / name
        save(model, None, folder, max_shard_bytes=1 << 30 if name == "qat" else 200_000)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tok / f, folder / f)
        (folder / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": 0, "eos_token_id": [1, 4]}))
        out[name] = folder
    return out


# --- mutations ---------------------------------------------------------------------------------

WEIRD = [0, -1, 1, 2, 3, 7, 31, 32, 33, 64, 320, 321, 1 << 31, 1 << 63, 1 << 64, 10 ** 30, 1.5,
         -0.0, 1e-300, 1e308, "", "x", "64", "F32", "NaN", None, True, False, [], [1], [64],
         [-1], ["a"], [[1]], {}, {"a": 1}, "\u0000", "\udcff".encode("utf-8", "surrogatepass")
         .decode("utf-8", "replace")]


def weird(rng):
    return rng.choice(WEIRD)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def mutate_json_value(obj, rng, depth=0):
    """A copy of a JSON value with one random change somewhere inside."""
    if isinstance(obj, dict) and obj and rng.random() < 0.85:
        key = rng.choice(list(obj))
        out = dict(obj)
        r = rng.random()
        if r < 0.12:
            del out[key]
        elif r < 0.2:
            out[rng.choice(["mystery", "__metadata__", key + "_", ""])] = weird(rng)
        elif r < 0.55 or depth > 3:
            out[key] = weird(rng)
        else:
            out[key] = mutate_json_value(obj[key], rng, depth + 1)
        return out
    if isinstance(obj, list) and obj and rng.random() < 0.8:
        out = list(obj)
        i = rng.randrange(len(out))
        r = rng.random()
        if r < 0.2:
            del out[i]
        elif r < 0.35:
            out.append(out[i])
        elif r < 0.7 or depth > 3:
            out[i] = weird(rng)
        else:
            out[i] = mutate_json_value(out[i], rng, depth + 1)
        return out
    return weird(rng)


def mutate_bytes(data: bytes, rng) -> bytes:
    r = rng.random()
    if not data:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    if r < 0.3:  # flip bytes
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if r < 0.5:  # truncate
        return data[:rng.randrange(len(data))]
    if r < 0.65:  # append garbage
        return data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    if r < 0.8:  # non-UTF-8 bytes inserted
        i = rng.randrange(len(data))
        return data[:i] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]) + data[i:]
    if r < 0.9:  # a slice duplicated
        i, j = sorted(rng.randrange(len(data)) for _ in range(2))
        return data[:j] + data[i:j] + data[j:]
    return data[:rng.randrange(len(data))] + _nested(rng.choice([50, 500, 5000, 100000])).encode()


def mutate_safetensors(data: bytes, rng) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    header, body = data[8:8 + n], data[8 + n:]
    r = rng.random()
    if r < 0.45:  # a structured change of the header JSON
        h = json.loads(header)
        names = [k for k in h if k != "__metadata__"]
        name = rng.choice(names)
        entry = dict(h[name])
        field = rng.choice(["dtype", "shape", "data_offsets", "entry", "metadata", "shift"])
        if field == "entry":
            h[name] = weird(rng)
        elif field == "metadata":
            h["__metadata__"] = weird(rng)
        elif field == "shift":  # offsets moved by a few bytes
            b, e = entry["data_offsets"]
            d = rng.choice([-2, -1, 1, 2, 8])
            entry["data_offsets"] = [b + d, e + d] if rng.random() < 0.5 else [b, e + d]
            h[name] = entry
        else:
            entry[field] = mutate_json_value(entry[field], rng) if rng.random() < 0.5 \
                else weird(rng)
            h[name] = entry
        hb = json.dumps(h).encode()
        hb += b" " * (-len(hb) % 8)
        return struct.pack("<Q", len(hb)) + hb + body
    if r < 0.6:  # header length field off
        d = rng.choice([-8, -1, 1, 8, len(body), -n, 1 << 40, (1 << 64) - 1 - n])
        return struct.pack("<Q", max(0, min((1 << 64) - 1, n + d))) + data[8:]
    if r < 0.72:  # trailing or missing data bytes
        if rng.random() < 0.5:
            return data + b"\0" * rng.choice([1, 2, 8, 4096])
        return data[:-rng.choice([1, 2, 8])]
    if r < 0.82:  # raw bytes of the header
        return struct.pack("<Q", n) + mutate_bytes(header, rng)[:n].ljust(n, b" ") + body
    if r < 0.92:  # the tensor data (weights may become NaN/Inf: verify=True must say so)
        b = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(8 + n, len(b))
            b[i] = rng.choice([0xFF, 0x7F, 0x80, rng.randrange(256)])
        return bytes(b)
    return mutate_bytes(data, rng)


def mutate_json_file(data: bytes, rng) -> bytes:
    if rng.random() < 0.75:
        try:
            obj = json.loads(data)
        except ValueError:
            return mutate_bytes(data, rng)
        if rng.random() < 0.08:
            return json.dumps(obj).replace("1e-05", rng.choice(["NaN", "Infinity", "-1e999"]),
                                          1).encode()
        return json.dumps(mutate_json_value(obj, rng), ensure_ascii=False,
                          default=str).encode("utf-8", "surrogatepass")
    return mutate_bytes(data, rng)


TEMPLATES = ["{{ 'a' * 100000000000 }}", "{% for i in range(100000) %}{% for j in range(100000) "
             "%}{{ i }}{% endfor %}{% endfor %}", "{{ messages[0]['content'] | list | sort }}",
             "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "{{", "{% if %}",
             "{{ raise_exception('x') }}", "{{ 10 ** 10 ** 10 }}", "{{ bos_token * 99999999 }}",
             "{{ ''.__class__.__mro__ }}", "{{ messages | tojson }}", "{{ (1, 2) * 999999999 }}",
             "{{ range(99999999999) | list }}", "x" * 200000]


def apply_case(folder: Path, base: Path, rng) -> str:
    """Mutate one file of `folder` (a copy of `base`); returns a short description."""
    present = [f for f in FILES if (base / f).exists()]
    shards = sorted(p.name for p in base.glob("model-*.safetensors"))
    target = rng.choice(present + shards)
    path = folder / target
    r = rng.random()
    if r < 0.04:
        path.unlink()
        os.mkfifo(path)
        return f"{target}: FIFO"
    if r < 0.07:
        path.unlink()
        path.mkdir()
        return f"{target}: directory"
    if r < 0.10:
        path.unlink()
        path.symlink_to("/dev/zero")
        return f"{target}: -> /dev/zero"
    if r < 0.12:
        path.unlink()
        return f"{target}: missing"
    data = (base / target).read_bytes()
    if target.endswith(".safetensors"):
        new, what = mutate_safetensors(data, rng), "safetensors"
    elif target == "tokenizer_config.json" and rng.random() < 0.35:
        cfg = json.loads(data)
        cfg["chat_template"] = rng.choice(TEMPLATES + [weird(rng)])
        new, what = json.dumps(cfg).encode(), "chat_template"
    else:
        new, what = mutate_json_file(data, rng), "json"
    path.write_bytes(new)
    return f"{target}: {what}"


def restore(folder: Path, base: Path) -> None:
    for p in list(folder.iterdir()):
        src = base / p.name
        if p.is_symlink() or not p.is_file() or not src.exists() or \
                p.stat().st_size != src.stat().st_size or p.read_bytes() != src.read_bytes():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    for src in base.iterdir():
        if not (folder / src.name).exists() and not (folder / src.name).is_symlink():
            shutil.copy(src, folder / src.name)


# --- workers -------------------------------------------------------------------------------------

def _case_rng(seed: int, i: int) -> random.Random:
    return random.Random(seed * 1_000_003 + i)


def run_one(i: int, seed: int, bases: dict, work: dict, timeout: float):
    from mlx_mobilemoe import load
    from mlx_mobilemoe.checkpoint import CheckpointError
    from mlx_mobilemoe.config import ConfigError

    rng = _case_rng(seed, i)
    name = BASES[i % len(BASES)]
    folder, base = work[name], bases[name]
    restore(folder, base)
    what = apply_case(folder, base, rng)

    def on_alarm(signum, frame):
        raise TimeoutError(f"case took more than {timeout} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        load(folder, verify=True)
        outcome, detail = "ok", ""
    except TimeoutError as e:
        outcome, detail = "hang", str(e)
    except (CheckpointError, ConfigError) as e:
        outcome, detail = "named", f"{type(e).__name__}: {str(e)[:200]}"
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - counting exactly these is the point
        tb = traceback.extract_tb(e.__traceback__)[-1]
        outcome, detail = "unexpected", (f"{type(e).__name__}: {str(e)[:200]} "
                                         f"({Path(tb.filename).name}:{tb.lineno})")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return outcome, f"{name} {what} | {detail}"


def worker(conn, seed, root, timeout):
    root = Path(root)
    bases = {n: root / "bases" / n for n in BASES}
    work = {}
    for n in BASES:
        work[n] = Path(tempfile.mkdtemp(prefix=f"w{os.getpid()}-{n}-", dir=root))
        shutil.rmtree(work[n])
        shutil.copytree(bases[n], work[n])
    from mlx_mobilemoe import load  # noqa: F401  (imported before the first deadline runs)
    conn.send("ready")
    while True:
        i = conn.recv()
        if i is None:
            return
        conn.send((i,) + run_one(i, seed, bases, work, timeout))


class Pool:
    """Worker processes fed one case at a time; a worker that does not answer within the
    deadline is killed (hang), one that dies is restarted (crash)."""

    def __init__(self, n, seed, root, timeout):
        self.ctx = mp.get_context("spawn")
        self.seed, self.root, self.timeout = seed, root, timeout
        self.slots = [self._start() for _ in range(n)]

    def _start(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=worker, args=(child, self.seed, self.root, self.timeout),
                             daemon=True)
        p.start()
        return {"proc": p, "conn": parent, "case": None, "since": 0.0, "ready": False}

    def run(self, cases, on_result):
        todo = list(cases)[::-1]
        busy = 0
        while todo or busy:
            for k, s in enumerate(self.slots):
                if not s["ready"]:  # starting up (imports, copies): no deadline yet
                    if s["conn"].poll():
                        try:
                            s["ready"] = s["conn"].recv() == "ready"
                        except (EOFError, OSError):
                            self._replace(k)
                    elif not s["proc"].is_alive():
                        self._replace(k)
                    continue
                if s["case"] is None and todo:
                    s["case"], s["since"] = todo.pop(), time.monotonic()
                    s["conn"].send(s["case"])
                    busy += 1
            time.sleep(0.001)
            for k, s in enumerate(self.slots):
                if s["case"] is None or not s["ready"]:
                    continue
                if s["conn"].poll():
                    try:
                        i, outcome, detail = s["conn"].recv()
                    except (EOFError, OSError):
                        i, outcome, detail = s["case"], "crash", "worker pipe closed"
                        self._replace(k)
                    on_result(i, outcome, detail)
                    self.slots[k]["case"] = None
                    busy -= 1
                elif not s["proc"].is_alive():
                    on_result(s["case"], "crash", f"worker exit code {s['proc'].exitcode}")
                    self._replace(k)
                    busy -= 1
                elif time.monotonic() - s["since"] > self.timeout * 3 + 30:
                    on_result(s["case"], "hang", "no answer: worker killed")
                    s["proc"].kill()
                    self._replace(k)
                    busy -= 1

    def _replace(self, k):
        old = self.slots[k]
        if old["proc"].is_alive():
            old["proc"].kill()
        old["proc"].join(5)
        self.slots[k] = self._start()

    def close(self, kill=False):
        for s in self.slots:
            if kill:
                s["proc"].kill()
                continue
            try:
                s["conn"].send(None)
            except OSError:
                pass
        for s in self.slots:
            s["proc"].join(10)
            if s["proc"].is_alive():
                s["proc"].kill()


def _exit_on_sigterm(signum, frame):
    raise SystemExit(143)  # unwinds through Pool.close / the finally blocks


def main(argv=None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=None, help="number of cases (default 500; "
                   "100000 with --long)")
    p.add_argument("--long", action="store_true", help="long run: 100,000 cases by default, "
                   "progress with rate and ETA every 30 s on stderr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first case number")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    p.add_argument("--replay", type=int, default=None, help="run case N in this process and "
                   "print its outcome (with the traceback of an unexpected exception)")
    p.add_argument("--out", default=None, help="also write the JSON summary here")
    a = p.parse_args(argv)
    n = a.cases if a.cases is not None else (100_000 if a.long else 500)

    root = Path(tempfile.mkdtemp(prefix="mobilemoe-fuzz-"))
    try:
        make_bases(root / "bases")
        if a.replay is not None:
            bases = {b: root / "bases" / b for b in BASES}
            work = {}
            for b in BASES:
                work[b] = root / f"replay-{b}"
                shutil.copytree(bases[b], work[b])
            print(json.dumps(run_one(a.replay, a.seed, bases, work, a.timeout)))
            return 0
        counts = {k: 0 for k in ("ok", "named", "unexpected", "hang", "crash")}
        examples = {k: [] for k in ("unexpected", "hang", "crash")}
        t0 = last = time.monotonic()
        done = 0

        def on_result(i, outcome, detail):
            nonlocal done, last
            counts[outcome] += 1
            done += 1
            if outcome in examples:
                if len(examples[outcome]) < 20:
                    examples[outcome].append({"case": i, "detail": detail})
                print(f"[case {i}] {outcome}: {detail}", file=sys.stderr, flush=True)
            now = time.monotonic()
            if a.long and (now - last > 30 or done == n):
                last = now
                rate = done / (now - t0)
                eta = (n - done) / rate if rate else float("inf")
                print(f"[{done}/{n}] {rate:.1f} cases/s, ETA {eta / 60:.1f} min, "
                      f"{json.dumps(counts)}", file=sys.stderr, flush=True)

        pool = Pool(a.workers, a.seed, str(root), a.timeout)
        try:
            pool.run(range(a.start, a.start + n), on_result)
        finally:
            pool.close(kill=sys.exc_info()[0] is not None)
        summary = {"cases": done, "seed": a.seed, "start": a.start, "workers": a.workers,
                   "seconds": round(time.monotonic() - t0, 1), **counts,
                   "examples": {k: v for k, v in examples.items() if v}}
        text = json.dumps(summary, indent=1)
        print(text)
        if a.out:
            Path(a.out).write_text(text + "\n")
        return 0 if counts["unexpected"] == counts["hang"] == counts["crash"] == 0 else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
