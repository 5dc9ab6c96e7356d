"""Corpus names, and the one place that turns a name into a folder on disk.

Why this module exists: a corpus name used to become a path segment (``STORE.work/NAME``) that was
later removed with ``rmtree``, so ``--name ..`` deleted the folder holding the store and a name
like ``a*`` was expanded as a glob by the shard reader. Names are now checked against a small,
documented character set wherever a corpus is created, and the work folder is derived from a
digest of the name, never from the raw string; :func:`remove_work_dir` refuses to delete anything
outside the store's own ``.work`` folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError

NAME_MAX = 64
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
NAME_RULE = (f"1-{NAME_MAX} characters from letters, digits, '_', '-' and '.', starting with a letter or digit")


def check_corpus_name(name: str | None) -> str:
    """The name itself when it is safe to create a corpus with; a one-line UserError otherwise."""
    if name is None or not str(name).strip():
        raise UserError("the corpus name is empty; pass --name NAME")
    name = str(name)
    if len(name) > NAME_MAX:
        raise UserError(f"corpus name {name[:20]!r}… is {len(name)} characters long; use at most {NAME_MAX} "
                        f"({NAME_RULE})")
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(f"corpus name {name!r} is not allowed: use {NAME_RULE}, e.g. --name my_corpus")
    return name


def default_corpus_name(corpus_path: str | Path) -> str:
    """A safe name derived from the corpus file's stem (unsafe characters become '_').

    Why not the raw stem: ``saeembed encode ..`` would otherwise be named ``..``.
    """
    stem = Path(str(corpus_path)).stem
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip("._-")[:NAME_MAX]
    if not safe:
        raise UserError(f"cannot derive a corpus name from {str(corpus_path)!r}; pass --name NAME ({NAME_RULE})")
    return safe


def work_root(store_path: str | Path) -> Path:
    """``STORE.work``: where unfinished encodes of one store keep their shards."""
    return Path(f"{store_path}.work")


def work_dir(store_path: str | Path, name: str) -> Path:
    """The work folder of one corpus: the checked name plus a digest (two names never share a folder,
    even on case-insensitive file systems)."""
    name = check_corpus_name(name)
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    return work_root(store_path) / f"{name}-{digest}"


def remove_work_dir(path: Path, store_path: str | Path) -> None:
    """Delete one corpus' work folder, and the store's ``.work`` folder once it is empty.

    Asserts the folder lies strictly inside ``STORE.work``: this is the only ``rmtree`` of encoding,
    so no name, symlink or bug can make it delete anything else.
    """
    root = work_root(store_path).resolve()
    target = Path(path).resolve()
    if root not in target.parents or target.parent != root:
        raise AssertionError(f"refusing to delete {target}: it is not a work folder inside {root}")
    shutil.rmtree(target, ignore_errors=True)
    try:
        root.rmdir()
    except OSError:
        pass  # other corpora still have unfinished work there


@contextmanager
def work_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on one corpus' work folder, or refuse at once with one line.

    Why: two identical encodes used to race on the same shards and manifest (one crashed with a
    FileNotFoundError on a .tmp file). The lock file lives inside the folder, which the holder
    deletes when it is done; a process that obtains the lock of a deleted file starts over, so two
    processes can never both believe they own the folder. The kernel drops the lock when its
    holder dies (kill -9), so a crashed run never blocks the rerun that resumes it.
    """
    while True:
        path.mkdir(parents=True, exist_ok=True)
        lock_path = path / ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"another saeembed process is already encoding {what}; wait for it to finish and "
                            "re-run (it then finds the corpus stored, or resumes)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder finished and deleted the folder under us: start over
    try:
        yield
    finally:
        _drop_if_only_lock(path)
        os.close(fd)


def _drop_if_only_lock(path: Path) -> None:
    """Remove a work folder that holds nothing but its lock (a run that stopped before any work),
    and the ``.work`` root above it once that is empty."""
    try:
        if os.listdir(path) == [".lock"]:
            os.unlink(path / ".lock")
            path.rmdir()
            path.parent.rmdir()
    except OSError:
        pass


__all__ = ["check_corpus_name", "default_corpus_name", "work_root", "work_dir", "remove_work_dir", "NAME_RULE",
           "NAME_MAX", "work_lock"]
