"""kill -9 a tiny CPU training run at random points, again and again, and check that nothing
is lost: every restart resumes from the newest complete checkpoint, no checkpoint is ever
unreadable or missing its tokenizer, at most one save interval of steps is lost per kill,
and the final losses equal those of an uninterrupted run. Prints one JSON object.

    python scripts/kill9_train.py --kills 30          # the acceptance run (docs/training.md)
    python scripts/kill9_train.py --kills 2 --no-reference   # CI size (tests/test_kill9.py)

Kill points: half of the kills land at a random time in the process's life (start-up,
tokenizing, training, saving); the other half watch the run's parent folder and strike while
a checkpoint is being written: while the staging folder is written, once it is complete, or
once the previous checkpoint has been renamed away (the state with no `out/` at all).
After each kill the on-disk state is copied aside, recovered (fsutil.recover, as `--resume`
does) and opened like `generate --model` would; then the run restarts with `--resume` (or
from scratch if no checkpoint was complete yet). A run that reaches its last step has every
step's loss compared with an uninterrupted reference run (resume is exact), and the next
kills go to a new run, until --kills is reached.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def corpus(path: Path, lines: int = 600) -> Path:
    rng = random.Random(0)
    words = ["thou", "art", "the", "king", "lord", "moon", "sweet", "night", "day", "love"]
    text = "".join(f"{rng.choice(['ROMEO', 'JULIET', 'NURSE'])}:\n"
                   + " ".join(rng.choice(words) for _ in range(rng.randint(4, 10))) + ".\n"
                   for _ in range(lines))
    path.write_text(text)
    return path


def train_cmd(data: Path, out: Path, steps: int, save_every: int, extra=()) -> list:
    return [sys.executable, "-m", "mlx_mobilemoe.train", "model=tiny",
            "tokenizer={vocab_size: 300}", f"data={data}", f"out={out}", f"steps={steps}",
            f"save_every={save_every}", "seq_len=16", "batch_size=4", "grad_accum=1",
            "warmup=2", "lr=3e-3", "log_every=100000", "eval_batches=1", *extra]


def staging(out: Path) -> list:
    pre = f".{out.name}."
    try:
        return sorted(e for e in os.listdir(out.parent) if e.startswith(pre))
    except FileNotFoundError:  # killed before it made the folder
        return []


def state_step(folder: Path):
    try:
        return json.loads((folder / "train_state" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return None


def newest_complete(out: Path):
    """The step recovery must land on: .complete (a finished, newer checkpoint) first, then
    out/, then .old (the previous one, if out/ is gone). None: no checkpoint yet."""
    for f in (out.parent / f".{out.name}.complete", out, out.parent / f".{out.name}.old"):
        if f.is_dir() and (f != out.parent / f".{out.name}.old" or not out.exists()):
            s = state_step(f)
            if s is not None:
                return s
    return None


def metric_lines(out: Path) -> list:
    recs = []
    for f in (out, out.parent / f".{out.name}.complete", out.parent / f".{out.name}.old"):
        try:
            text = (f / "metrics.jsonl").read_text()
        except OSError:
            continue
        for ln in text.splitlines():
            try:
                recs.append(json.loads(ln))
            except ValueError:
                pass  # a line cut by the kill
    return recs


def last_step_reached(out: Path) -> int:
    return max((r["step"] for r in metric_lines(out) if "loss" in r and "eval" not in r),
               default=0)


def check_copy(out: Path, scratch: Path) -> dict:
    """Copy the run's on-disk state aside, recover it and open it as a user would."""
    from mlx_mobilemoe import checkpoint, fsutil

    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    for e in [out.name] + staging(out):
        src = out.parent / e
        if src.is_dir():
            shutil.copytree(src, scratch / e, symlinks=True)
    copy = scratch / out.name
    fsutil.recover(copy)
    res = {"leftovers": fsutil.staging_names(copy) != [], "step": state_step(copy)}
    if res["step"] is None:
        return res
    res["tokenizer"] = (copy / "tokenizer.json").is_file()
    try:
        import mlx.core as mx

        model, _ = checkpoint.load(copy)
        res["readable"] = all(mx.isfinite(v).all().item()
                              for v in mx.load(str(copy / "train_state" /
                                                   "params.safetensors")).values())
        del model
    except Exception as e:  # what a user would hit: any failure counts
        res["readable"] = False
        res["error"] = f"{type(e).__name__}: {e}"
    return res


def run_until_killed(cmd, log, out: Path, mode: str, rng: random.Random, life: float):
    """Start `cmd`; kill -9 it per `mode`. Returns (killed, returncode, state at kill)."""
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                         start_new_session=True)
    t0 = time.perf_counter()
    if mode == "time":
        deadline = t0 + rng.uniform(0.0, life)
        while p.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.005)
    else:  # strike inside a checkpoint write
        want = mode.split(":")[1]  # partial | complete | old
        delay = rng.uniform(0.0, 0.03) if want == "partial" else 0.0
        seen_at = None
        while p.poll() is None and time.perf_counter() - t0 < life * 6:
            names = staging(out)
            if any(want in n for n in names):
                seen_at = seen_at or time.perf_counter()
                if time.perf_counter() - seen_at >= delay:
                    break
            time.sleep(0.0002)
    if p.poll() is not None:
        return False, p.returncode, None
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    state = "+".join(n.split(".")[-1].split("-")[0] for n in staging(out))
    return True, p.returncode, (state or "clean") + ("" if out.exists() else ", no out/")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--save-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the uninterrupted run the final losses are compared with")
    ap.add_argument("--workdir", help="keep everything here (default: a temp folder)")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="kill9."))
    work.mkdir(parents=True, exist_ok=True)
    data = corpus(work / "plays.txt")
    t_start = time.perf_counter()
    report = {"kills": 0, "kill_states": {}, "restarts": 0, "resumed": 0, "unreadable": 0,
              "missing_tokenizer": 0, "leftovers_after_recovery": 0, "max_steps_lost": 0,
              "save_every": a.save_every, "steps": a.steps, "failures": []}

    ref_losses = None
    log = open(work / "train.log", "ab")
    if not a.no_reference:
        ref = work / "runs" / "reference"
        t0 = time.perf_counter()
        rc = subprocess.call(train_cmd(data, ref, a.steps, a.save_every), stdout=log,
                             stderr=subprocess.STDOUT, cwd=ROOT)
        wall = time.perf_counter() - t0
        if rc != 0:
            report["failures"].append(f"reference run failed (rc {rc})")
        recs = [r for r in metric_lines(ref) if "loss" in r and "eval" not in r]
        ref_losses = {r["step"]: r["loss"] for r in recs}
        # start-up (imports, tokenizer, data, first compile) = wall - training time
        startup = wall - max((r.get("elapsed", 0.0) for r in recs), default=0.0)
    else:
        startup = 8.0
    life = max(startup, 1.0) + 1.0  # time kills land in start-up or the first second after
    report["startup_seconds"] = round(startup, 1)

    def finish_round(out, rc):
        """A run that reached its last step: compare every step's loss with the reference."""
        final = {r["step"]: r["loss"] for r in metric_lines(out)
                 if "loss" in r and "eval" not in r}
        report["rounds"] += 1
        if rc != 0 or max(final, default=0) != a.steps:
            report["failures"].append(f"{out.name}: rc {rc}, reached step "
                                      f"{max(final, default=0)}")
        if ref_losses is not None:
            same = sorted(final) == sorted(ref_losses)
            diff = max((abs(final[s] - ref_losses[s]) for s in ref_losses if s in final),
                       default=float("inf"))
            report["max_loss_diff_vs_reference"] = max(
                report.get("max_loss_diff_vs_reference", 0.0), diff)
            if not (same and diff <= 1e-5):
                report["failures"].append(f"{out.name}: losses differ from the "
                                          f"uninterrupted run (max diff {diff})")

    # Rounds: a run killed and resumed until it reaches its last step; then a new run, until
    # the number of kills is reached.
    report["rounds"] = 0
    out = work / "runs" / "run1"
    expected = None  # the checkpoint step the next start must resume from
    while report["kills"] < a.kills:
        resume = expected is not None
        cmd = train_cmd(data, out, a.steps, a.save_every, ["--resume"] if resume else [])
        mode = rng.choice(["time", "time", "time", "save:partial", "save:complete",
                           "save:old"])
        killed, rc, state = run_until_killed(cmd, log, out, mode, rng, life)
        report["restarts"] += 1
        if not killed:
            if rc != 0:
                report["failures"].append(f"restart {report['restarts']} exited with rc {rc}"
                                          f" (resume={resume})")
                break
            finish_round(out, rc)  # it finished before we struck: next round
            out = work / "runs" / f"run{report['rounds'] + 1}"
            expected = None
            continue
        report["kills"] += 1
        report["kill_states"][state] = report["kill_states"].get(state, 0) + 1
        report["resumed"] += resume
        new_expected = newest_complete(out)
        chk = check_copy(out, work / "scratch")
        if chk["leftovers"]:
            report["leftovers_after_recovery"] += 1
        if chk["step"] != new_expected:
            report["failures"].append(f"kill {report['kills']}: recovery found step "
                                      f"{chk['step']}, expected {new_expected}")
        if chk["step"] is not None:
            report["missing_tokenizer"] += not chk["tokenizer"]
            report["unreadable"] += not chk["readable"]
            if not chk["readable"]:
                report["failures"].append(f"kill {report['kills']}: {chk.get('error')}")
        if new_expected is not None:
            lost = last_step_reached(out) - new_expected
            report["max_steps_lost"] = max(report["max_steps_lost"], lost)
        if expected is not None and (new_expected is None or new_expected < expected):
            report["failures"].append(f"kill {report['kills']}: checkpoint went back from "
                                      f"step {expected} to {new_expected}")
        expected = new_expected

    # finish the last run uninterrupted
    cmd = train_cmd(data, out, a.steps, a.save_every, ["--resume"] if expected else [])
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    finish_round(out, rc)
    if report["max_steps_lost"] > a.save_every:
        report["failures"].append(f"lost {report['max_steps_lost']} steps > save_every")
    for k in ("unreadable", "missing_tokenizer", "leftovers_after_recovery"):
        if report[k]:
            report["failures"].append(f"{k}: {report[k]}")
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    report["ok"] = not report["failures"]
    report["workdir"] = str(work)
    print(json.dumps(report))
    if not a.workdir and report["ok"]:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
