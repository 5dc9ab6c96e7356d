"""Atomic file writes: a file is either the old one or the complete new one, never half of it.

Why one helper: shards, manifests, caches and label files were written by six tmp+rename variants,
one of which fsynced. Here every write goes to a unique temporary file in the target's folder, is
flushed and fsynced, renamed over the target, and the folder entry is fsynced too, so a crash or
``kill -9`` at any point leaves a readable file (old or new) and at most a stray ``.tmp-*`` file.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import polars as pl


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some file systems do not open folders; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fh)`` on a temporary file, then move it into place at ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False))


def atomic_write_parquet(df: pl.DataFrame, path: str | Path, compression: str = "zstd") -> Path:
    return atomic_write(path, lambda fh: df.write_parquet(fh, compression=compression))


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield a path beside ``target`` (not created yet) to fill as a folder, then rename it to ``target``:
    a reader sees no folder or the complete one. When another process renamed its own folder into
    place first, that one is kept and ours discarded (both hold the same content by construction)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(target.parent)


__all__ = ["atomic_folder", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_write_parquet"]
