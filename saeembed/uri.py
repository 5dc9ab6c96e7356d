"""Paths or URIs through ``pyarrow.fs``: where a corpus is read from and where shards are written.

A string with a scheme (``file://``, ``s3://``, ``gs://``, ``hdfs://``, anything
``pyarrow.fs.FileSystem.from_uri`` accepts) names a file on shared storage; anything else is a local
path. Every failure to understand or reach a URI is one :class:`UserError` line.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from .corpus import read_corpus
from .errors import UserError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(value: Any) -> bool:
    return isinstance(value, str) and bool(_SCHEME.match(value))


def filesystem_for(uri: str, what: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for ``uri``; one line naming the problem otherwise."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot open {what} {uri!r}: {first}; pass a local path or a URI that pyarrow.fs "
                        "understands (file:///abs/path, s3://bucket/path, gs://bucket/path, hdfs://...)") from None


def read_corpus_any(source: Any, **kwargs: Any) -> Any:
    """:func:`saeembed.corpus.read_corpus`, also for a corpus file given as a URI (copied once into a
    temporary file, read like a local one; the URI is recorded as the corpus' source)."""
    if not is_uri(source):
        return read_corpus(source, **kwargs)
    import pyarrow.fs as pafs

    fs, path = filesystem_for(source, "corpus")
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise UserError(f"cannot reach corpus {source!r}: {str(exc).splitlines()[0][:200]}; check the URI and "
                        "the credentials") from None
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"corpus {source!r} not found; check the URI")
    if info.type != pafs.FileType.File:
        raise UserError(f"corpus {source!r} is not a file; a URI corpus must be one parquet/csv/jsonl/json/txt file")
    with tempfile.TemporaryDirectory(prefix="saeembed-corpus-") as tmp:
        local = Path(tmp) / Path(path).name
        with fs.open_input_stream(path) as src, open(local, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        corpus = read_corpus(local, **kwargs)
    return replace(corpus, source=source)


__all__ = ["is_uri", "filesystem_for", "read_corpus_any"]
