"""The read handle of a store: :class:`Store`, and :func:`reads_store` for functions that take one.

A Store opens DuckDB read-only for queries and only takes the write lock while an encode
ingests, so notebooks can keep a Store open while a CLI job writes to the same file.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import polars as pl

from ..errors import UserError
from ..ids import corpus_range
from .catalog import StoreReader
from .connection import check_store_file, connect
from .parquet import check_deletable, delete_files, files_of, location_for
from .strata import STRATA_TABLES
from .write import transaction

log = logging.getLogger(__name__)


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
            self._con = connect(self.path, read_only=True)
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

    def write_after_reading(self, fn: Callable[[Any], None], what: str) -> None:
        """Run ``fn(write_connection)`` once the read-only connection is released, only if no other
        process holds the store at that moment (a cache a later writer fills as well: never worth a wait
        or an error)."""
        def run() -> None:
            try:
                con = connect(self.path, wait=0)
            except UserError:
                return
            try:
                fn(con)
            except Exception:
                log.debug("could not %s", what, exc_info=True)
            finally:
                con.close()

        self.after_reading(run)

    def _run_after(self) -> None:
        pending, self._after = self._after, []
        for fn in pending:
            fn()

    def _reader(self) -> StoreReader:
        if self._con is None:
            self._con = connect(self.path, read_only=True)
            self._persistent = self._depth == 0
        return StoreReader(self._con)

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

    def sql(self, query: str, params: list | dict | None = None) -> pl.DataFrame:
        """Run a read-only query; the connection cannot modify the store."""
        with self.reading():
            return self._reader().sql(query, params)

    def corpora(self) -> pl.DataFrame:
        if not check_store_file(self.path):  # named for a first encode, not created yet
            return StoreReader.empty_corpora()
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
        self.close()
        con = connect(self.path)
        try:
            reader = StoreReader(con)
            info = reader.corpus(corpus)
            location, registered = files_of(con, info["corpus_id"])
            files = [] if location is None or keep_files else check_deletable(
                corpus, info["corpus_id"], location, registered, location_for(self.path, parquet_dir))
            with transaction(con):
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


def open_store(path: str | Path, store_class: type[Store] = Store) -> Store:
    """Open (or name, for a first encode) a store file; ``store_class`` lets the facade's Store, which
    also encodes, share the check."""
    if not str(path):
        raise UserError("store path is empty; pass --store or set SAEEMBED_STORE")
    return store_class(path)


def registry_row(store_path: str | Path, name: str) -> dict[str, Any]:
    """The corpus' registry row, read on a short read-only connection (an encode that finds its corpus
    already stored returns it)."""
    con = connect(store_path, read_only=True)
    try:
        return StoreReader(con).corpus(name)
    finally:
        con.close()
