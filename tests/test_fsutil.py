"""The atomic folder writer: a kill at every file-system step of a save, and of the recovery
after it, leaves the old or the new folder complete; foreign files are never deleted."""

import os
import stat

import pytest

from mlx_mobilemoe import fsutil
from mlx_mobilemoe.fsutil import OutputFolderError, atomic_folder, recover, staging_names

STEPS = ("rename", "fsync", "unlink", "rmdir", "mkdir")


def _write(folder, version):
    (folder / "config.json").write_text(version)
    (folder / "model.safetensors").write_text(version * 100)
    (folder / "train_state").mkdir()
    (folder / "train_state" / "state.json").write_text(version)


def _old_target(tmp_path):
    out = tmp_path / "out"
    out.mkdir(parents=True)
    _write(out, "1")
    (out / "stale-shard").mkdir()
    (out / "model-00001-of-00002.safetensors").write_text("old shard")  # ours: dropped
    (out / "cache").mkdir()
    (out / "cache" / "tokens.bin").write_text("cache")
    (out / "notes.txt").write_text("the user's")
    return out


def _run_killed(fn, kill_at):
    """Run fn in a forked child whose kill_at-th file-system step exits at once (like
    kill -9: no cleanup). Returns the number of steps the child took (it stops early when
    killed)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        count = [0]

        def wrap(name):
            real = getattr(os, name)

            def f(*a, **k):
                count[0] += 1
                if count[0] == kill_at:
                    os.write(w, str(count[0]).encode())
                    os._exit(9)
                return real(*a, **k)
            setattr(os, name, f)

        for name in STEPS:
            wrap(name)
        try:
            fn()
        except BaseException:
            import traceback

            traceback.print_exc()
            os._exit(3)
        os.write(w, str(count[0]).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        n = f.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 9), code
    return int(n), code == 9


def _check(out, allowed):
    assert out.is_dir()
    v = (out / "config.json").read_text()
    assert v in allowed
    assert (out / "model.safetensors").read_text() == v * 100
    assert (out / "train_state" / "state.json").read_text() == v
    assert (out / "notes.txt").read_text() == "the user's"  # foreign: carried, never lost
    assert (out / "cache" / "tokens.bin").read_text() == "cache"  # keep: carried
    assert not staging_names(out)
    assert not (out / fsutil.JOURNAL).exists()
    return v


def _save(out):
    with atomic_folder(out, foreign="keep", keep=("cache",), owned=fsutil.PROJECT_NAMES) as tmp:
        _write(tmp, "2")


def test_save_replaces_ours_and_carries_the_rest(tmp_path):
    out = _old_target(tmp_path)
    _save(out)
    assert _check(out, {"2"}) == "2"
    assert not (out / "model-00001-of-00002.safetensors").exists()
    assert (out / "stale-shard").is_dir()  # not a name we write: foreign, kept
    mode = stat.S_IMODE(out.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask  # an ordinary folder, not mkdtemp's 0700


def test_kill_at_every_step_of_a_save_and_of_its_recovery(tmp_path):
    probe = _old_target(tmp_path / "probe")
    total, killed = _run_killed(lambda: _save(probe), 10 ** 9)
    assert not killed and total > 10
    seen, between_renames = set(), 0
    for k in range(1, total + 1):
        base = tmp_path / f"k{k}"
        out = _old_target(base)
        _, killed = _run_killed(lambda: _save(out), k)
        assert killed
        between_renames += not out.exists()
        # a reader after recovery sees the old or the new folder, complete
        if k % 3 == 0:  # and a kill during the recovery itself is recovered too
            n, _ = _run_killed(lambda: recover(out), 10 ** 9)
            for j in range(1, n + 1, 2):
                _run_killed(lambda: recover(out), j)
        recover(out)
        seen.add(_check(out, {"1", "2"}))
    assert seen == {"1", "2"} and between_renames  # both outcomes and the no-`out` state


def test_a_reader_finishes_a_save_killed_between_its_renames(tmp_path):
    """`generate --model OUT` (checkpoint.resolve) after a kill that left OUT absent: the
    swap is finished and the new folder is read, as the next save or --resume would."""
    from mlx_mobilemoe import checkpoint
    probe = _old_target(tmp_path / "probe")
    total, _ = _run_killed(lambda: _save(probe), 10 ** 9)
    for k in range(1, total + 1):
        out = _old_target(tmp_path / f"k{k}")
        _run_killed(lambda: _save(out), k)
        if not out.exists():
            assert checkpoint.resolve(str(out)) == out
            assert _check(out, {"1", "2"}) == "2" and not staging_names(out)
            return
    raise AssertionError("no kill point left the folder absent")


def test_stale_partials_are_removed_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    _run_killed(lambda: _save(out), 10 ** 9)
    # a writer killed while writing leaves a partial folder
    n, _ = _run_killed(lambda: _save(out), 10 ** 9)
    _, killed = _run_killed(lambda: _save(out), n - 8)
    assert killed and staging_names(out)
    with atomic_folder(out, foreign="keep", owned=fsutil.PROJECT_NAMES) as tmp:  # live...
        live = [p for p in staging_names(out) if p.name.endswith(tmp.name[-8:])]
        recover(out)  # ...writer is not stale; the killed one is
        assert staging_names(out) == live
        _write(tmp, "3")
    assert (out / "config.json").read_text() == "3" and not staging_names(out)


def test_foreign_files_are_refused_never_deleted(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputFolderError, match="thesis.tex"):
        with atomic_folder(home) as tmp:
            _write(tmp, "1")
    assert (home / "thesis.tex").read_text() == "years of work"
    assert sorted(os.listdir(tmp_path)) == ["home"]  # nothing left behind
    # a checkpoint writer does not replace a run's files: save onto a run folder is refused
    run = tmp_path / "run"
    run.mkdir()
    _write(run, "1")
    with pytest.raises(OutputFolderError, match="train_state"):
        with atomic_folder(run) as tmp:
            (tmp / "config.json").write_text("2")
    assert (run / "config.json").read_text() == "1"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputFolderError, match="not a folder"):
        with atomic_folder(f):
            pass


def test_owned_names_match_the_writers():
    from mlx_mobilemoe import qat

    assert {qat.QAT_STATE, qat.QAT_WEIGHTS} <= set(fsutil.QAT_STATE_NAMES)
    for name in ("model-00001-of-00003.safetensors", "tokenizer.json", "config.json"):
        assert fsutil._owned(name, fsutil.WRITER_NAMES)
    assert not fsutil._owned("train_state", fsutil.WRITER_NAMES)
    assert fsutil._owned("train_state", fsutil.PROJECT_NAMES)
