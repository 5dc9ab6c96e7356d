"""A corpus' work folder: where an unfinished encode keeps its shards, who may touch it, and the
only code that deletes it.

Layout of ``STORE.work/<name>-<digest>/``: ``manifest.json`` (the settings that produced the shards;
a rerun with other settings is refused), ``docs-NNNNNN.parquet`` and ``acts-NNNNNN.parquet`` per
shard (the acts file is written last and marks the shard done), ``.lock`` (held by the encode that
owns the folder). The folder name comes from a digest of the checked name, never from the raw name.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError
from ..fsutil import atomic_write_json
from ..names import check_corpus_name


def work_root(store_path: str | Path) -> Path:
    """``STORE.work``: where unfinished encodes of one store keep their shards."""
    return Path(f"{store_path}.work")


def work_folder_name(name: str) -> str:
    """``<name>-<digest>``: the checked name plus a digest, so two names never share a folder, even on
    case-insensitive file systems; local and Ray work folders are named alike."""
    name = check_corpus_name(name)
    return f"{name}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:12]}"


def work_dir(store_path: str | Path, name: str) -> Path:
    """The local work folder of one corpus, inside ``STORE.work``."""
    return work_root(store_path) / work_folder_name(name)


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


def act_path(work: Path, shard: int) -> Path:
    return work / f"acts-{shard:06d}.parquet"


def docs_path(work: Path, shard: int) -> Path:
    return work / f"docs-{shard:06d}.parquet"


def prepare_manifest(work: Path, wanted: dict[str, Any]) -> None:
    """Record the settings of a new run, or check that a resumed run uses the recorded ones."""
    manifest = work / "manifest.json"
    if manifest.exists():
        have = json.loads(manifest.read_text())
        # a setting this version records and an older one did not is no reason to refuse a resume
        have.setdefault("extra", {})
        for key, value in wanted.get("extra", {}).items():
            have["extra"].setdefault(key, value)
        if have != wanted:
            diff = sorted(k for k in set(have) | set(wanted) if have.get(k) != wanted.get(k))
            raise UserError(
                f"an unfinished encode in {work} used other settings ({', '.join(diff)}); re-run it with "
                f"the same arguments to resume, or delete {work} to start over"
            )
        return
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(manifest, wanted)


__all__ = ["work_root", "work_folder_name", "work_dir", "remove_work_dir", "work_lock", "act_path", "docs_path",
           "prepare_manifest"]
