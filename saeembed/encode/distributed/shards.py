"""The atomic-shard protocol of :mod:`saeembed.encode.workdir` on any ``pyarrow.fs`` filesystem.

Same layout as a local work folder (``manifest.json``, ``docs-NNNNNN.parquet``, then
``acts-NNNNNN.parquet``, whose presence marks a shard done), so Ray workers on several nodes can
write into one folder on shared storage (an NFS path, ``s3://``, ``gs://``...). A shard is written
under a temporary name and moved into place: a rename on POSIX file systems, and on object stores
an object only becomes visible once complete, so a reader never sees half a shard.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import polars as pl

from ...errors import UserError
from ...uri import filesystem_for, is_uri
from ..workdir import work_folder_name


@dataclass
class ShardFolder:
    """One corpus' work folder on a pyarrow filesystem (picklable: sent to every Ray worker)."""

    fs: Any
    path: str  # the folder, inside ``fs``
    uri: str  # as the user named it (for messages)

    @classmethod
    def for_corpus(cls, root: str, name: str, create: bool = True) -> ShardFolder:
        """``ROOT/<name>-<digest>`` (the same folder name as a local work folder), created unless
        ``create`` is False (to look for leftovers without leaving a folder behind)."""
        import pyarrow.fs as pafs

        if is_uri(root):
            fs, base = filesystem_for(root, "work directory")
        else:
            fs, base = pafs.LocalFileSystem(), os.path.abspath(root)
        folder = cls(fs, posixpath.join(base.rstrip("/"), work_folder_name(name)), root)
        if not create:
            return folder
        try:
            fs.create_dir(folder.path, recursive=True)
        except OSError as exc:
            raise UserError(f"cannot create work directory {root!r}: {str(exc).splitlines()[0][:200]}; pass a "
                            "folder or URI that every Ray node can write") from None
        return folder

    @property
    def local(self) -> bool:
        import pyarrow.fs as pafs

        return isinstance(self.fs, pafs.LocalFileSystem)

    def file(self, name: str) -> str:
        return posixpath.join(self.path, name)

    def acts(self, shard: int) -> str:
        return self.file(f"acts-{shard:06d}.parquet")

    def docs(self, shard: int) -> str:
        return self.file(f"docs-{shard:06d}.parquet")

    def exists(self, path: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(path).type == pafs.FileType.File

    def done(self, n_shards: int) -> set[int]:
        """The shards whose acts file exists (one listing, not one request per shard)."""
        import pyarrow.fs as pafs

        names = {posixpath.basename(i.path) for i in self.fs.get_file_info(pafs.FileSelector(self.path))}
        return {s for s in range(n_shards) if f"acts-{s:06d}.parquet" in names}

    def write_parquet(self, df: pl.DataFrame, path: str) -> None:
        """Write ``df`` at ``path`` atomically (temporary name, then move)."""
        if self.local:
            from ...fsutil import atomic_write_parquet

            atomic_write_parquet(df, path)
            return
        tmp = self.file(f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
        with self.fs.open_output_stream(tmp) as out:
            df.write_parquet(out, compression="zstd")
        self.fs.move(tmp, path)

    def read_parquet(self, path: str) -> pl.DataFrame:
        with self.fs.open_input_file(path) as fh:
            return pl.read_parquet(fh)

    def prepare_manifest(self, wanted: dict[str, Any]) -> None:
        """Record the settings of a new run, or check that a resumed run uses the recorded ones."""
        manifest = self.file("manifest.json")
        if self.exists(manifest):
            with self.fs.open_input_stream(manifest) as fh:
                have = json.loads(fh.read().decode("utf-8"))
            if have != wanted:
                diff = sorted(k for k in set(have) | set(wanted) if have.get(k) != wanted.get(k))
                raise UserError(f"an unfinished encode in {self.uri} used other settings ({', '.join(diff)}); re-run "
                                f"it with the same arguments to resume, or delete {self.path} to start over")
            return
        data = json.dumps(wanted, indent=2, ensure_ascii=False).encode("utf-8")
        if self.local:
            from ...fsutil import atomic_write_bytes

            atomic_write_bytes(manifest, data)
            return
        with self.fs.open_output_stream(manifest) as out:
            out.write(data)

    def remove(self, missing_ok: bool = False) -> None:
        """Delete this folder (only ever a ``<name>-<digest>`` folder that :meth:`for_corpus` named)."""
        import pyarrow.fs as pafs

        base = posixpath.basename(self.path)
        if "-" not in base or len(base.rsplit("-", 1)[1]) != 12:
            raise AssertionError(f"refusing to delete {self.path}: not a corpus work folder")
        if missing_ok and self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
            return
        self.fs.delete_dir(self.path)


__all__ = ["ShardFolder"]
