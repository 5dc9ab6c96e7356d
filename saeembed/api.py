"""The Python API: ``open_store(path)`` → :class:`Store`, a read handle that also encodes.

A Store opens DuckDB read-only for queries and only takes the write lock while an encode
ingests, so notebooks can keep a Store open while a CLI job writes to the same file. This module is
the users' entry point; nothing inside the package imports it (analyses take
:class:`saeembed.store.handle.Store`, which this Store extends).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from .encode import encode_corpus
from .store import handle
from .store.handle import as_store, reads_store


class Store(handle.Store):
    """A DuckDB store of SAE-embedded corpora that can also encode into itself (see
    :class:`saeembed.store.handle.Store` for the read methods)."""

    def encode(self, corpus: Any, name: str, options: Any = None, **kwargs: Any) -> pl.DataFrame:
        """Encode a corpus into this store: a file path, ``"-"`` (stdin), a polars/pandas DataFrame, a
        list of strings or a ``datasets.Dataset``; options as :class:`~saeembed.encode.EncodeOptions`
        or keywords (see :func:`saeembed.encode.encode_corpus`)."""
        self.close()
        row = encode_corpus(self.path, corpus, name, options, **kwargs)
        return pl.DataFrame([row])


def open_store(path: str | Path) -> Store:
    """Open (or name, for a first encode) a store file."""
    return handle.open_store(path, Store)


__all__ = ["Store", "as_store", "open_store", "reads_store"]
