"""The one atomic folder writer: every folder the project writes (checkpoints, run folders,
token files) is built beside its final place and swapped in, recoverably from a kill at any
point, and never deletes a file the project did not write.

For a target folder `P` (name `N`) the writer uses three sibling names:
  .N.partial-<pid>-<hex>  being written; its owner holds an flock on it (so a kill, which
                          drops the lock, marks it stale)
  .N.complete             fully written and fsynced (a rename marks completion); it may hold
                          a journal (JOURNAL) naming entries of `P` to carry into it
  .N.old                  the previous `P`, deleted once the new one is in place
The commit: partial -> .N.complete (+ journal), carry entries P/e -> .N.complete/e, drop the
journal, P -> .N.old, .N.complete -> P, delete .N.old. `recover(P)` finishes or undoes any
interrupted commit (rolling forward to the newest complete folder) and deletes stale partials;
every writer and `--resume` call it first. The commit steps run under an flock on the parent
folder, so two writers in one parent do not interleave their renames.

What may be replaced: entries whose names the writer owns (`owned`: by default the names of
checkpoint, QAT state and token folders; the trainer also owns a run's files). Any other
entry of an existing target is "foreign": `foreign="refuse"` raises OutputFolderError before
anything is written, `foreign="keep"` carries it into the new folder. So a writer deletes
only what it writes: `save` onto a run folder is refused rather than dropping its
train_state/. `keep` names entries that are always carried over (a run's data cache).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterable

# Names of the files and folders the project writes into an output folder.
CHECKPOINT_NAMES = ("config.json", "generation_config.json", "model.safetensors",
                    "model-*-of-*.safetensors", "model.safetensors.index.json",
                    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "chat_template.jinja")
RUN_NAMES = ("train_state", "metrics.jsonl", "eval.json", "train_config.yaml")
QAT_STATE_NAMES = ("qat.json", "qat_weights.safetensors")  # qat.save_qat
TOKEN_NAMES = ("train.bin", "val.bin", "lines.bin", "meta.json")
WRITER_NAMES = CHECKPOINT_NAMES + QAT_STATE_NAMES + TOKEN_NAMES  # atomic_folder's default
PROJECT_NAMES = WRITER_NAMES + RUN_NAMES

JOURNAL = ".mlx_mobilemoe-carry.json"


class OutputFolderError(ValueError):
    """An output folder we may not write: it holds files the project did not write."""


def _owned(name: str, owned) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in owned)


def _names(path: Path) -> dict:
    p = Path(os.path.abspath(path))
    n = p.name
    return {"partial": f".{n}.partial-", "complete": p.parent / f".{n}.complete",
            "old": p.parent / f".{n}.old"}


def staging_names(path) -> list:
    """The writer's sibling folders of `path` that exist now (for tests and tools)."""
    p = Path(os.path.abspath(path))
    nm = _names(p)
    out = [p.parent / e for e in _listdir(p.parent) if e.startswith(nm["partial"])]
    return out + [q for q in (nm["complete"], nm["old"]) if q.exists()]


def foreign_entries(path, keep: Iterable[str] = (), owned=PROJECT_NAMES) -> list:
    """Entries of an existing folder that are neither owned nor kept (sorted names)."""
    p = Path(path)
    if not p.is_dir():
        return []
    return sorted(e for e in _listdir(p) if not _owned(e, owned) and e not in set(keep))


def check_target(path, foreign: str = "refuse", keep: Iterable[str] = (),
                 owned=WRITER_NAMES) -> None:
    """Refuse (OutputFolderError) a target that is not a folder, or that holds foreign
    entries when foreign="refuse"."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputFolderError(f"{p} exists and is not a folder")
    if foreign == "refuse":
        bad = foreign_entries(p, keep, owned)
        if bad:
            shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
            raise OutputFolderError(
                f"{p} holds files this writer does not replace ({shown}); writing here would "
                "lose them: choose another folder, or move them away")


@contextlib.contextmanager
def atomic_folder(path, foreign: str = "refuse", keep: Iterable[str] = (),
                  owned=WRITER_NAMES):
    """Yield an empty staging folder; on success it becomes `path` (see the module doc), on
    an exception it vanishes and `path` stays as it was."""
    if foreign not in ("refuse", "keep"):
        raise ValueError(f"foreign must be 'refuse' or 'keep', got {foreign!r}")
    path = _target(path)
    keep, owned = tuple(keep), tuple(owned)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _parent_lock(path.parent):
        _recover_locked(path)
        check_target(path, foreign, keep, owned)
        tmp, lock = _make_partial(path)
    try:
        yield tmp
        _commit(tmp, path, foreign, keep, owned)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)


def recover(path) -> None:
    """Finish or undo an interrupted commit of `path` and delete stale partial folders.
    Afterwards `path` is the newest complete folder (or absent if there never was one)."""
    path = _target(path)
    if not path.parent.is_dir():
        return
    with _parent_lock(path.parent):
        _recover_locked(path)


# --- internals --------------------------------------------------------------------------

def _target(path) -> Path:
    p = Path(os.path.abspath(Path(path).expanduser()))
    return Path(os.path.realpath(p)) if p.is_symlink() else p


_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP)


def _listdir(p: Path) -> list:
    try:
        return os.listdir(p)
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def _parent_lock(parent: Path):
    fd = os.open(parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # a file system without locks: single writer assumed
            if e.errno not in _NO_LOCKS:
                raise
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _make_partial(path: Path):
    nm = _names(path)
    while True:
        tmp = path.parent / f"{nm['partial']}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.mkdir(tmp, 0o777)  # the umask applies: an ordinary folder, not mkdtemp's 0700
            break
        except FileExistsError:
            continue
    fd = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in _NO_LOCKS:
            raise
    return tmp, fd


def _is_stale(partial: Path) -> bool:
    """A partial folder whose writer is gone (nobody holds its lock)."""
    try:
        fd = os.open(partial, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in _NO_LOCKS:  # no locks here: is the writer's process alive?
            return not _pid_alive(partial.name)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    finally:
        os.close(fd)


def _pid_alive(partial_name: str) -> bool:
    try:
        pid = int(partial_name.rsplit("partial-", 1)[1].split("-")[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            fp = Path(dirpath) / f
            if not fp.is_symlink():
                _fsync_path(fp)
        _fsync_path(Path(dirpath))


def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)
    _fsync_path(dst.parent)


def _carry(journal_dir: Path, src: Path) -> None:
    """Move the entries named in journal_dir's journal from `src` into journal_dir, then
    drop the journal (each move is idempotent, so a killed carry is redone)."""
    j = journal_dir / JOURNAL
    if not j.exists():
        return
    for name in json.loads(j.read_text()):
        s, d = src / name, journal_dir / name
        if (s.exists() or s.is_symlink()) and not (d.exists() or d.is_symlink()):
            os.rename(s, d)
    _fsync_path(journal_dir)
    if src.exists():
        _fsync_path(src)
    j.unlink()
    _fsync_path(journal_dir)


def _commit(tmp: Path, path: Path, foreign: str, keep: tuple, owned: tuple) -> None:
    _fsync_tree(tmp)
    with _parent_lock(path.parent):
        _recover_locked(path, skip=tmp)
        check_target(path, foreign, keep, owned)  # again: files may have appeared meanwhile
        if path.exists():
            new = set(_listdir(tmp))
            carry = [e for e in _listdir(path) if e not in new
                     and (e in keep or not _owned(e, owned))]
            if carry:
                (tmp / JOURNAL).write_text(json.dumps(sorted(carry)))
                _fsync_path(tmp / JOURNAL)
                _fsync_path(tmp)
        _rename(tmp, _names(path)["complete"])
        _roll_forward(path)


def _roll_forward(path: Path) -> None:
    nm = _names(path)
    complete, old = nm["complete"], nm["old"]
    if path.exists():
        _carry(complete, path)
        _rename(path, old)
    elif old.exists():
        _carry(complete, old)
    _rename(complete, path)
    if old.exists():
        shutil.rmtree(old)
        _fsync_path(path.parent)


def _recover_locked(path: Path, skip: Path = None) -> None:
    nm = _names(path)
    for e in _listdir(path.parent):
        if e.startswith(nm["partial"]):
            p = path.parent / e
            if p != skip and _is_stale(p):
                shutil.rmtree(p, ignore_errors=True)
    complete, old = nm["complete"], nm["old"]
    if complete.exists():
        if path.exists() and old.exists():
            shutil.rmtree(old)  # garbage of an older commit: `path` holds what it carried
        _roll_forward(path)
    elif old.exists():
        if path.exists():
            shutil.rmtree(old)
        else:
            _rename(old, path)
