"""The Python API: ``open_store(path)`` → :class:`Store`.

A Store opens DuckDB read-only for queries and only takes the write lock while an encode
ingests, so notebooks can keep a Store open while a CLI job writes to the same file.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import polars as pl

from . import store as store_mod
from .errors import UserError
from .ids import corpus_range


class Store:
    """A DuckDB store of SAE-embedded corpora.

    Every query method opens a read-only connection for the duration of the call and closes it
    afterwards, so a notebook may keep a Store for hours while CLI encodes write to the same file
    (DuckDB lets one process write only while no other holds the file). Analyses hold one
    connection for their whole call (:meth:`reading`). ``con`` gives raw access and keeps its
    connection open until :meth:`close`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._con = None
        self._depth = 0
        self._persistent = False
        self._after: list[Callable[[], None]] = []

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """One read-only connection for a block of queries, released when the outermost block ends."""
        if self._con is None:
            self._con = store_mod.connect(self.path, read_only=True)
        self._depth += 1
        try:
            yield self._con
        finally:
            self._depth -= 1
            if self._depth == 0 and not self._persistent:
                self.close()
                self._run_after()

    def after_reading(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the read-only connection is released (e.g. to keep statistics computed on
        first use, which needs a short write connection that a reader of the same process blocks)."""
        self._after.append(fn)
        if self._depth == 0 and self._con is None:
            self._run_after()

    def _run_after(self) -> None:
        pending, self._after = self._after, []
        for fn in pending:
            fn()

    def _reader(self) -> store_mod.StoreReader:
        if self._con is None:
            self._con = store_mod.connect(self.path, read_only=True)
            self._persistent = self._depth == 0
        return store_mod.StoreReader(self._con)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        self._persistent = False

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def con(self):
        return self._reader().con

    def encode(self, corpus: Any, name: str, options: Any = None, **kwargs: Any) -> pl.DataFrame:
        """Encode a corpus into this store: a file path, ``"-"`` (stdin), a polars/pandas DataFrame, a
        list of strings or a ``datasets.Dataset``; options as :class:`~saeembed.encode.EncodeOptions`
        or keywords (see :func:`saeembed.encode.encode_corpus`)."""
        from .encode import encode_corpus

        self.close()
        row = encode_corpus(self.path, corpus, name, options, **kwargs)
        return pl.DataFrame([row])

    def sql(self, query: str, params: list | dict | None = None) -> pl.DataFrame:
        """Run a read-only query; the connection cannot modify the store."""
        with self.reading():
            return self._reader().sql(query, params)

    def corpora(self) -> pl.DataFrame:
        if not store_mod.check_store_file(self.path):  # named for a first encode, not created yet
            return store_mod.StoreReader.empty_corpora()
        with self.reading():
            return self._reader().corpora()

    def corpus(self, name: str) -> dict[str, Any]:
        with self.reading():
            return self._reader().corpus(name)

    def features(self, sae: str | None = None, feature_ids: Iterable[int] | None = None,
                 contexts: bool = True) -> pl.DataFrame:
        with self.reading():
            return self._reader().features(sae, feature_ids, contexts)

    def documents(self, corpus: str) -> pl.DataFrame:
        with self.reading():
            info = self.corpus(corpus)
            return self.sql("SELECT doc_id, row_idx, text, n_tokens, meta FROM documents WHERE corpus_id = ? "
                            "ORDER BY doc_id", [info["corpus_id"]])

    def embeddings(self, corpus: str, pooling: str = "max") -> tuple[Any, np.ndarray]:
        """(scipy CSR [n_docs, d_sae], doc ids) for a corpus; rows follow ``doc_ids``. ``pooling``: max,
        sum, mean, count or share (the share of the document's tokens where the latent fired)."""
        with self.reading():
            return self._reader().embeddings(corpus, pooling)

    def drop(self, corpus: str, parquet_dir: str | None = None, keep_files: bool = False) -> list[str]:
        """Delete a corpus and its documents and activations, in one transaction. A Parquet-kept
        corpus' registration goes in the same transaction and its files are deleted after it
        commits; returns the deleted files (empty for a corpus kept in DuckDB).

        Only files named as saeembed names them inside ``parquet_dir`` (the ``--parquet-dir`` the
        corpus was encoded with, default ``STORE.parquet``) are deleted: a store handed over may list
        any path, so any other registration is refused before anything changes. ``keep_files``
        drops the corpus and deletes no file.
        """
        from .layout import check_deletable, delete_files, files_of, location_for
        from .strata import STRATA_TABLES

        self.close()
        con = store_mod.connect(self.path)
        try:
            reader = store_mod.StoreReader(con)
            info = reader.corpus(corpus)
            location, registered = files_of(con, info["corpus_id"])
            files = [] if location is None or keep_files else check_deletable(
                corpus, info["corpus_id"], location, registered, location_for(self.path, parquet_dir))
            with store_mod.transaction(con):
                cid = info["corpus_id"]
                con.execute("DELETE FROM parquet_corpora WHERE corpus_id = ?", [cid])
                con.execute("DELETE FROM activations WHERE doc_id BETWEEN ? AND ?", list(corpus_range(cid)))
                for table in ("latent_stats", "corpus_stats", *STRATA_TABLES):  # a later corpus may reuse the id
                    con.execute(f"DELETE FROM {table} WHERE corpus_id = ?", [cid])
                con.execute("DELETE FROM documents WHERE corpus_id = ?", [cid])
                con.execute("DELETE FROM corpora WHERE corpus_id = ?", [cid])
        finally:
            con.close()
        return delete_files(location, files) if location is not None and not keep_files else []


F = TypeVar("F", bound=Callable[..., Any])


def as_store(store: Store | str | Path) -> Store:
    """Accept a Store or a path, so Python callers and the CLI share one code path."""
    if isinstance(store, Store):
        return store
    if not Path(store).exists():
        raise UserError(f"store {store} does not exist; encode a corpus first (saeembed encode CORPUS --store {store})")
    return open_store(store)


def reads_store(fn: F) -> F:
    """For public functions whose first argument is a store (Store or path): the whole call runs
    on one read-only connection, which is released when the call returns."""
    @wraps(fn)
    def wrapper(store: Store | str | Path, *args: Any, **kwargs: Any) -> Any:
        st = as_store(store)
        with st.reading():
            return fn(st, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


def open_store(path: str | Path) -> Store:
    """Open (or name, for a first encode) a store file."""
    if not str(path):
        raise UserError("store path is empty; pass --store or set SAEEMBED_STORE")
    return Store(path)
