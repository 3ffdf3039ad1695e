"""The training loop: AdamW with warmup + cosine, clipping, accumulation, compiled steps,
periodic eval, progress bar, JSONL metrics, atomic checkpoints and exact `--resume`.

A run folder `out/` is itself a checkpoint in the official layout (config.json,
model.safetensors, tokenizer files) plus:
  train_state/   float32 parameters, optimizer state and step (what --resume needs;
                 the official weights are BF16, so resuming from them would not be exact)
  metrics.jsonl  one line per step (and per eval), eval.json (latest held-out results),
  train_config.yaml (the resolved stage settings).
Each save goes through the one atomic folder writer (mlx_mobilemoe/fsutil.py): built beside
`out`, swapped in recoverably from a kill at any point; the data cache inside `out` and files
the project did not write are carried over, never deleted. Weights that are not finite are
never written. Ctrl-C (or SIGTERM) stops after the current step with a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import sys
import threading
import time
from functools import reduce
from pathlib import Path
from typing import Callable, Optional

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from .. import checkpoint, fsutil
from ..model import Model
from .config import TrainConfig
from .distributed import World
from ..moe import MoEOptions
from .moe import balance_biases, load_summary

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss keeps coming out non-finite)."""


def freeze_except(model, names) -> None:
    """Freeze every parameter except those of modules whose path ends with one of `names`
    (e.g. "router"): router-only training of an upcycled model. Unknown names are an error."""
    model.freeze()
    hit = set()
    for path, mod in model.named_modules():
        last = path.rsplit(".", 1)[-1]
        if last in names:
            mod.unfreeze()
            hit.add(last)
    missing = sorted(set(names) - hit)
    if missing:
        raise TrainingError(f"trainable: no module named {', '.join(missing)} in the model")
    model.freeze(keys=["expert_bias"])  # moved by the balancing rule, not by gradient


def _cache_entry(cfg: TrainConfig) -> Optional[str]:
    """The entry of `out` that holds the data cache (the default `out/cache`), if any."""
    try:
        rel = cfg.cache.resolve().relative_to(cfg.out_dir.resolve())
    except ValueError:
        return None
    return rel.parts[0] if rel.parts else None


def _has_checkpoint(out: Path) -> bool:
    return (out / "train_state").exists() or (out / "config.json").exists()


def check_out_dir(cfg: TrainConfig, resume: bool, is_main: bool = True) -> None:
    """Before a run writes anything: finish an interrupted checkpoint swap of `out`, then
    refuse an `out` that a fresh run would clobber: one holding a checkpoint (--resume
    continues it; overwrite=true replaces it) or files the project did not write
    (overwrite=true trains there anyway; those files are kept)."""
    out = cfg.out_dir
    if is_main:
        fsutil.recover(out)
    if out.exists() and not out.is_dir():
        raise fsutil.OutputFolderError(f"out={out} exists and is not a folder")
    if resume or cfg.overwrite or not out.exists():
        return
    if _has_checkpoint(out):
        raise fsutil.OutputFolderError(
            f"out={out} holds a checkpoint of an earlier run: --resume continues it, "
            "--overwrite replaces it (or choose another out)")
    keep = [_cache_entry(cfg)] if _cache_entry(cfg) else []
    foreign = fsutil.foreign_entries(out, keep)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" (+{len(foreign) - 5} more)" if len(foreign) > 5
                                          else "")
        raise fsutil.OutputFolderError(
            f"out={out} holds files this project did not write ({shown}): choose another "
            "out, or --overwrite to train there anyway (they are kept)")


def _all_finite(params) -> mx.array:
    """One boolean: every floating-point array of a parameter tree is finite."""
    flags = [mx.isfinite(v).all() for _, v in tree_flatten(params)
             if mx.issubdtype(v.dtype, mx.floating)]
    return reduce(mx.logical_and, flags, mx.array(True))


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup` steps, then cosine down to lr * min_lr_ratio at `total`."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, total - cfg.warmup)
    t = min(1.0, (step - cfg.warmup) / span)
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + (cfg.lr - lo) * 0.5 * (1 + math.cos(math.pi * t))


def masked_nll(model, x, y, m):
    """Summed cross-entropy of targets y where mask m is 1, and the number of such tokens:
    the one held-out scorer (training eval, mlx_mobilemoe.evaluate, the quant report)."""
    logits = model(x, moe=MoEOptions("dropless"))
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), y, reduction="none")
    return (ce * m).sum(), m.sum()


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """One status line: step, loss, tokens/s and ETA (redrawn on a terminal)."""

    def __init__(self, total: int, every: int, enabled: bool):
        self.total, self.every, self.enabled = total, every, enabled
        self.tty = sys.stderr.isatty()

    def update(self, step, loss, tps, eta, extra=""):
        if not self.enabled or not (self.tty or step % self.every == 0 or step == self.total):
            return
        w = 24
        done = int(w * step / max(1, self.total))
        line = (f"[{'#' * done}{'.' * (w - done)}] {step}/{self.total} loss {loss:.4f} "
                f"{tps / 1e3:.1f}k tok/s ETA {_fmt_time(eta)}{extra}")
        if self.tty:
            end = "\n" if step == self.total else ""
            print("\r" + line.ljust(100), end=end, file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def message(self, text):
        if self.enabled:
            print(("\n" if self.tty else "") + text, file=sys.stderr, flush=True)


class Trainer:
    """Runs one stage over `data` (an object with `batch(step, batch_size, rows)`).

    eval_sets: {domain: callable(batch_size) -> iterable of (x, y, mask)}.
    tok_dir: the tokenizer folder copied into every checkpoint.
    save_view: context manager giving the model to write (LoRA: the fused view)."""

    def __init__(self, cfg: TrainConfig, model: Model, data, tok_dir: Path,
                 eval_sets: Optional[dict] = None, save_view: Optional[Callable] = None,
                 world: Optional[World] = None, resume: bool = False, extra_meta=None):
        self.cfg, self.model, self.data, self.tok_dir = cfg, model, data, Path(tok_dir)
        self.eval_sets = eval_sets or {}
        self.save_view = save_view
        self.world = world or World()
        self.resume = resume
        self.extra_meta = extra_meta or {}
        self.out = cfg.out_dir
        self.tok_files = _read_tokenizer(self.tok_dir, model)
        self.saved_step = None  # the step of the checkpoint in `out` (None: none yet)
        self._stop_signal = None  # SIGINT/SIGTERM received
        self._stop_agreed = False  # ... and every rank stops after this step
        if cfg.batch_size % (cfg.grad_accum * self.world.size):
            raise TrainingError(f"batch_size {cfg.batch_size} is not divisible by grad_accum "
                                f"{cfg.grad_accum} x ranks {self.world.size}")
        self.micro = cfg.batch_size // (cfg.grad_accum * self.world.size)
        self.total = cfg.steps
        self.step = 0
        self.elapsed = 0.0  # training seconds over all sessions (for the budget)
        self.tokens = 0
        self.bad = 0
        self.progress = Progress(self.total, cfg.log_every, self.world.is_main)
        model.freeze(keys=["expert_bias"])  # moved by the balancing rule, not by gradient
        if cfg.trainable:
            freeze_except(model, cfg.trainable)
        model.train()
        self.opt = optim.AdamW(learning_rate=cfg.lr, betas=list(cfg.betas), eps=1e-8,
                               weight_decay=cfg.weight_decay)
        self.opt.init(model.trainable_parameters())
        check_out_dir(cfg, resume, self.world.is_main)
        if resume:
            self._load_state()
        self._build_fns()

    # --- compiled functions ---------------------------------------------------------------

    def _build_fns(self):
        cfg, model, moe = self.cfg, self.model, self.cfg.moe

        def loss_fn(x, y, m):
            logits, st = model(x, moe=MoEOptions(moe["dispatch"], moe["capacity_factor"],
                                                  stats=True))
            ce = nn.losses.cross_entropy(logits.astype(mx.float32), y, reduction="none")
            ntok = m.sum()
            ce_sum = (ce * m).sum()
            z, aux = st["z"].mean(), st["aux"].mean()
            # Summed over tokens so micro-batches and ranks add up exactly; / tokens later.
            obj = ce_sum + ntok * (moe["z_loss"] * z + moe["aux_loss"] * aux)
            return obj, {"ce": ce_sum, "ntok": ntok, "load": st["load"],
                         "dropped": st["dropped"].sum(), "z": z * ntok}

        vg = nn.value_and_grad(model, loss_fn)

        def grad_step(x, y, m):
            (obj, stats), grads = vg(x, y, m)
            stats["obj"] = obj
            return stats, grads

        def norm(grads, scale):
            return mx.sqrt(sum((g.astype(mx.float32) ** 2).sum()
                               for _, g in tree_flatten(grads))) * scale

        def update(grads, load, scale):
            grads = tree_map(lambda g: g * scale, grads)
            if cfg.grad_clip:
                grads, _ = optim.clip_grad_norm(grads, cfg.grad_clip)
            self.opt.update(model, grads)
            balance_biases(model, load, moe["balance_gamma"])
            return _all_finite(model.trainable_parameters())

        def eval_loss(x, y, m):
            return masked_nll(model, x, y, m)

        self._grad_step, self._norm, self._update, self._eval = grad_step, norm, update, \
            eval_loss
        if cfg.compile:
            st = [model.state, mx.random.state]
            self._grad_step = mx.compile(grad_step, inputs=st, outputs=st)
            self._norm = mx.compile(norm)
            su = [model.state, self.opt.state]
            self._update = mx.compile(update, inputs=su, outputs=su)
            self._eval = mx.compile(eval_loss, inputs=[model.state], outputs=[model.state])

    # --- one optimizer step ---------------------------------------------------------------

    def _train_step(self, step: int) -> dict:
        cfg, w = self.cfg, self.world
        # Randomness (dropout) is a function of (seed, step, rank): nothing to save for resume.
        mx.random.seed((cfg.seed * 1_000_003 + step) * 1_009 + w.rank)
        acc, grads = None, None
        for a in range(cfg.grad_accum):
            lo = (a * w.size + w.rank) * self.micro
            x, y, m = self.data.batch(step, cfg.batch_size, slice(lo, lo + self.micro))
            stats, g = self._grad_step(mx.array(x), mx.array(y), mx.array(m))
            if acc is None:
                acc, grads = stats, g
            else:
                acc = tree_map(mx.add, acc, stats)
                grads = tree_map(mx.add, grads, g)
        if w.size > 1:  # the stop request rides along, so every rank stops at the same step
            acc["stop"] = mx.array(float(self._stop_signal is not None))
            both = w.sum_tree({"acc": acc, "grads": grads})
            acc, grads = both["acc"], both["grads"]
            self._stop_agreed = float(acc.pop("stop").item()) > 0
        else:
            self._stop_agreed = self._stop_signal is not None
        scale = 1.0 / mx.maximum(acc["ntok"], 1.0)
        gnorm = self._norm(grads, scale)
        mx.eval(acc, gnorm)
        ntok = float(acc["ntok"].item())
        rec = {"step": step + 1,
               "loss": float(acc["ce"].item()) / max(ntok, 1.0),
               "objective": float(acc["obj"].item()) / max(ntok, 1.0),
               "grad_norm": float(gnorm.item()),
               "tokens": ntok}
        if not (math.isfinite(rec["objective"]) and math.isfinite(rec["grad_norm"])):
            rec["skipped"] = True
            return rec
        lr = lr_at(step, self.total, cfg)
        self.opt.learning_rate = lr
        finite = self._update(grads, acc["load"], scale)
        mx.eval(self.model.state, self.opt.state, finite)
        if not finite.item():
            kept = (f"the checkpoint of step {self.saved_step} in {self.out} is kept"
                    if self.saved_step is not None else "no checkpoint was written")
            raise TrainingError(
                f"step {step + 1}: the update made the weights non-finite (lr {lr:g}, grad "
                f"norm {rec['grad_norm']:.4g}); stopping without saving them: {kept}")
        load = np.array(acc["load"])
        rec.update({"lr": lr, "router_z": float(acc["z"].item()) / max(ntok, 1.0),
                    "dropped_frac": float(acc["dropped"].item()) / max(float(load.sum()), 1.0),
                    **load_summary(load),
                    "load": load.astype(np.int64).tolist()})
        return rec

    # --- evaluation -----------------------------------------------------------------------

    def evaluate(self) -> dict:
        self.model.eval()
        res, tot_ce, tot_n = {}, 0.0, 0.0
        for name, batches in self.eval_sets.items():
            ce = n = 0.0
            for x, y, m in batches(self.cfg.batch_size, self.cfg.eval_batches):
                c, k = self._eval(mx.array(x), mx.array(y), mx.array(m))
                mx.eval(c, k)
                ce, n = ce + c.item(), n + k.item()
            if n:
                res[name] = {"loss": ce / n, "ppl": math.exp(min(ce / n, 50)), "tokens": int(n)}
                tot_ce, tot_n = tot_ce + ce, tot_n + n
        if tot_n:
            res["overall"] = {"loss": tot_ce / tot_n, "ppl": math.exp(min(tot_ce / tot_n, 50)),
                              "tokens": int(tot_n)}
        self.model.train()
        return res

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> dict:
        """Train to the last step (or stop_after, or a Ctrl-C / SIGTERM: each stops after the
        current step with a checkpoint; a second one stops at once without saving)."""
        with self._stop_on_signals():
            return self._run()

    def _run(self) -> dict:
        cfg, main = self.cfg, self.world.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._trim_metrics()
            if self.resume:
                self._log({"step": self.step, "event": "resume"})
        t_session = time.perf_counter()
        elapsed0 = self.elapsed
        last_eval = None
        step_times = []
        while self.step < self.total:
            t0 = time.perf_counter()
            rec = self._train_step(self.step)
            dt = time.perf_counter() - t0
            self.step += 1
            self.elapsed = elapsed0 + time.perf_counter() - t_session
            if rec.get("skipped"):
                self.bad += 1
                self.progress.message(
                    f"step {self.step}: non-finite loss/gradient (loss {rec['loss']}, grad norm "
                    f"{rec['grad_norm']}): update skipped, weights unchanged")
                self._log(rec)
                if self.bad >= cfg.max_bad_steps:
                    self.save()
                    raise TrainingError(
                        f"stopping: {self.bad} consecutive non-finite steps; the weights "
                        f"before them are saved in {self.out}")
                if self._stop_agreed:
                    return self._interrupted()
                continue
            self.bad = 0
            self.tokens += rec["tokens"]
            step_times.append(dt)
            tps = rec["tokens"] / dt
            rec.update({"tok_per_s": round(tps, 1), "elapsed": round(self.elapsed, 3)})
            self._budget(step_times)
            recent = step_times[-20:] if len(step_times) > 1 else step_times
            eta = (self.total - self.step) * (sum(recent) / len(recent))
            self._log(rec)
            self.progress.update(self.step, rec["loss"], tps, eta)
            if self._stop_agreed and self.step < self.total:
                return self._interrupted()
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.total:
                last_eval = self._eval_and_log()
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.total:
                self.save()
            if cfg.stop_after is not None and self.step >= cfg.stop_after \
                    and self.step < self.total:
                self._save_once()
                self.progress.message(f"stopped after step {self.step} (stop_after); "
                                      "continue with --resume")
                return {"step": self.step, "stopped": True}
        last_eval = self._eval_and_log() if self.eval_sets else last_eval
        self.save(last_eval)
        return {"step": self.step, "eval": last_eval, "tokens": self.tokens,
                "elapsed": self.elapsed}

    def _save_once(self):
        if self.saved_step != self.step:
            self.save()

    def _interrupted(self) -> dict:
        self._save_once()
        why = (signal.Signals(self._stop_signal).name if self._stop_signal is not None
               else "a stop on another rank")
        self.progress.message(f"stopped at step {self.step} ({why}); checkpoint saved in "
                              f"{self.out}: continue with --resume")
        return {"step": self.step, "stopped": True, "interrupted": True}

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT/SIGTERM set a flag the loop checks after each step (the handler only sets
        it: printing from a handler could re-enter a half-written stderr line)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop_signal is not None:
                raise KeyboardInterrupt  # the second one: stop now, nothing saved
            self._stop_signal = signum

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def _budget(self, step_times):
        """With a time budget (seconds of training after the first, compiling, step), fix
        the number of steps once the speed is known (after a few steps; keep warmup above
        that so the schedule equals that of a run given this step count up front)."""
        cfg = self.cfg
        if not cfg.time_budget or getattr(self, "_budget_fixed", False) or len(step_times) < 6:
            return
        per = float(np.median(step_times[1:]))
        left = cfg.time_budget - sum(step_times[1:])
        total = min(cfg.steps, self.step + max(0, int(left / per)))
        self.total = self.progress.total = max(total, self.step)
        self._budget_fixed = True
        self._log({"step": self.step, "event": "time_budget", "steps": self.total,
                   "sec_per_step": per})
        self.progress.message(f"time budget {cfg.time_budget:.0f}s at {per * 1e3:.1f} ms/step: "
                              f"training {self.total} steps")

    def _eval_and_log(self):
        if not self.world.is_main or not self.eval_sets:
            return None
        res = self.evaluate()
        self._log({"step": self.step, "eval": res})
        if "overall" in res:
            per = ", ".join(f"{k} {v['ppl']:.2f}" for k, v in res.items() if k != "overall")
            self.progress.message(f"eval @ {self.step}: ppl {res['overall']['ppl']:.3f} ({per})")
        (self.out / "eval.json").write_text(json.dumps({"step": self.step, **res}, indent=2))
        return res

    # --- logs -----------------------------------------------------------------------------

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def _log(self, rec: dict):
        if self.world.is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def _trim_metrics(self):
        """Drop log lines past the resumed step (written after the last checkpoint), and a
        last line cut short by a kill."""
        p = self.metrics_path
        if not p.exists():
            return
        if not self.resume:
            p.unlink()
            return
        keep = []
        for ln in p.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("step", 0) <= self.step:
                keep.append(ln)
        p.write_text("".join(ln + "\n" for ln in keep))

    # --- checkpoints ----------------------------------------------------------------------

    def save(self, eval_result=None):
        """Write out/ atomically: official layout + tokenizer + train_state + logs. Refuses
        (TrainingError) weights that are not finite: the last checkpoint stays."""
        if not self.world.is_main:
            return
        try:
            checkpoint.check_finite(dict(tree_flatten(self.model.parameters())))
        except checkpoint.CheckpointError as e:
            kept = (f"the checkpoint of step {self.saved_step} is kept"
                    if self.saved_step is not None else "no checkpoint was written")
            raise TrainingError(f"step {self.step}: {e}; not saved: {kept} in {self.out}") \
                from None
        out = self.out
        keep = [_cache_entry(self.cfg)] if _cache_entry(self.cfg) else []
        with fsutil.atomic_folder(out, foreign="keep", keep=keep,
                                  owned=fsutil.PROJECT_NAMES) as tmp:
            view = self.save_view(self.model) if self.save_view else _null_view(self.model)
            with view as m:
                checkpoint.write_folder(m, None, tmp)
            for name, data in self.tok_files.items():
                (tmp / name).write_bytes(data)
            self._write_state(tmp / "train_state")
            for f in ("metrics.jsonl", "eval.json"):
                if (out / f).exists():
                    shutil.copy2(out / f, tmp / f)
            if eval_result is not None:
                (tmp / "eval.json").write_text(json.dumps({"step": self.step,
                                                           **eval_result}, indent=2))
            _write_yaml(tmp / "train_config.yaml", self.cfg.to_dict())
        self.saved_step = self.step

    def _write_state(self, folder: Path):
        folder.mkdir()
        params = dict(tree_flatten(self.model.parameters()))
        mx.save_safetensors(str(folder / "params.safetensors"), params)
        opt = dict(tree_flatten(self.opt.state))
        mx.save_safetensors(str(folder / "optimizer.safetensors"), opt)
        meta = {"step": self.step, "total_steps": self.total, "tokens": self.tokens,
                "elapsed": self.elapsed, "stage": self.cfg.stage,
                "world_size": self.world.size,
                "budget_fixed": getattr(self, "_budget_fixed", False), **self.extra_meta}
        (folder / "state.json").write_text(json.dumps(meta, indent=2) + "\n")

    def _load_state(self):
        folder = self.out / "train_state"
        self.world.barrier()  # rank 0 has recovered an interrupted swap (check_out_dir)
        if not (folder / "state.json").exists():
            raise TrainingError(f"--resume: no checkpoint in {self.out} (no "
                                "train_state/state.json): nothing to resume")
        try:
            meta = json.loads((folder / "state.json").read_text())
            if meta.get("stage") != self.cfg.stage:
                raise TrainingError(f"--resume: {self.out} holds a {meta.get('stage')} run, "
                                    f"not {self.cfg.stage}")
            params = mx.load(str(folder / "params.safetensors"))
            self.model.load_weights(list(params.items()), strict=True)
            opt = mx.load(str(folder / "optimizer.safetensors"))
            self.opt.state = tree_unflatten(list(opt.items()))
            mx.eval(self.model.parameters(), self.opt.state)
            self.step, self.total = int(meta["step"]), int(meta["total_steps"])
            self.tokens, self.elapsed = meta["tokens"], meta["elapsed"]
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            raise TrainingError(f"--resume: cannot read the checkpoint in {folder} ({e})") \
                from None
        saved_tok = self.out / "tokenizer.json"
        if saved_tok.exists() and saved_tok.read_bytes() != self.tok_files["tokenizer.json"]:
            raise TrainingError(f"--resume: {saved_tok} differs from this stage's tokenizer "
                                f"({self.tok_dir}): the run was trained with another one")
        self._budget_fixed = meta.get("budget_fixed", False)
        self.progress.total = self.total
        self.saved_step = self.step


def _read_tokenizer(tok_dir: Path, model: Model) -> dict:
    """The tokenizer files every checkpoint stores, read once at the start (their folder
    may be a cache that changes later)."""
    from tokenizers import Tokenizer

    f = tok_dir / "tokenizer.json"
    if not f.is_file():
        raise TrainingError(f"{tok_dir}: no tokenizer.json (every checkpoint stores its "
                            "tokenizer)")
    files = {n: (tok_dir / n).read_bytes() for n in TOKENIZER_FILES if (tok_dir / n).is_file()}
    try:
        n = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8")).get_vocab_size(
            with_added_tokens=True)
    except Exception as e:  # tokenizers raises plain Exception on a bad file
        raise TrainingError(f"{f}: not a readable tokenizer ({e})") from None
    if n > model.args.vocab_size:
        raise TrainingError(f"{f}: {n} token ids, more than the model's vocab_size "
                            f"{model.args.vocab_size}")
    return files


class _null_view:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        return self.model

    def __exit__(self, *exc):
        return False


def _write_yaml(path: Path, values: dict):
    try:
        import yaml

        path.write_text(yaml.safe_dump(values, sort_keys=False))
    except ImportError:  # the GPU machine may lack pyyaml: JSON is valid YAML
        path.write_text(json.dumps(values, indent=2) + "\n")
