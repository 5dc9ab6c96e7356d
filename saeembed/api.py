"""The Python API: ``open_store(path)`` → :class:`Store`.

A Store opens DuckDB read-only for queries and only takes the write lock while an encode
ingests, so notebooks can keep a Store open while a CLI job writes to the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from . import store as store_mod
from .errors import UserError


class Store:
    """A DuckDB store of SAE-embedded corpora."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._con = None

    # connection handling: opened lazily, read-only, dropped before any write
    def _reader(self) -> store_mod.StoreReader:
        if self._con is None:
            self._con = store_mod.connect(self.path, read_only=True)
        return store_mod.StoreReader(self._con)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def con(self):  # noqa: ANN201 - duckdb connection, for analyses that need raw access
        return self._reader().con

    def encode(self, corpus: str | Path, name: str, **options: Any) -> pl.DataFrame:
        """Encode a corpus file into this store (see :func:`saeembed.encode.encode_corpus`)."""
        from .encode import encode_corpus

        self.close()
        row = encode_corpus(self.path, corpus, name, **options)
        return pl.DataFrame([row])

    def sql(self, query: str, params: list | dict | None = None) -> pl.DataFrame:
        """Run a read-only query; the connection cannot modify the store."""
        return self._reader().sql(query, params)

    def corpora(self) -> pl.DataFrame:
        return self._reader().corpora()

    def corpus(self, name: str) -> dict[str, Any]:
        return self._reader().corpus(name)

    def features(self, sae: str | None = None) -> pl.DataFrame:
        return self._reader().features(sae)

    def documents(self, corpus: str) -> pl.DataFrame:
        info = self.corpus(corpus)
        return self.sql("SELECT doc_id, row_idx, text, n_tokens, meta FROM documents WHERE corpus_id = ? "
                        "ORDER BY doc_id", [info["corpus_id"]])

    def embeddings(self, corpus: str, pooling: str = "max") -> tuple[Any, np.ndarray]:
        """(scipy CSR [n_docs, d_sae], doc ids) for a corpus; rows follow ``doc_ids``."""
        return self._reader().embeddings(corpus, pooling)

    def drop(self, corpus: str) -> None:
        """Delete a corpus and its documents and activations, in one transaction."""
        self.close()
        con = store_mod.connect(self.path)
        try:
            reader = store_mod.StoreReader(con)
            info = reader.corpus(corpus)
            with store_mod.transaction(con):
                cid = info["corpus_id"]
                con.execute("DELETE FROM activations WHERE doc_id >> 32 = ?", [cid])
                con.execute("DELETE FROM documents WHERE corpus_id = ?", [cid])
                con.execute("DELETE FROM corpora WHERE corpus_id = ?", [cid])
        finally:
            con.close()


def open_store(path: str | Path) -> Store:
    """Open (or name, for a first encode) a store file."""
    if not str(path):
        raise UserError("store path is empty; pass --store or set SAEEMBED_STORE")
    return Store(path)
