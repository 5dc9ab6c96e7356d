"""The DuckDB catalog: schema, corpus registry, ingest of encoded shards, read-only SQL.

One store holds many corpora. ``doc_id = corpus_id << 32 | row_idx``: stable, derivable from the
source row, and unique across corpora, so analyses join on integers and re-ingesting a corpus can
never collide with another one.

Tables (``activations`` keeps only non-zeros):

- ``corpora(corpus_id, name, source, n_docs, reader, layer, sae, pooling, created_at, n_tokens, config)``
- ``documents(doc_id, corpus_id, row_idx, text, n_tokens, meta)``
- ``saes(sae, d_in, d_sae, activation, k, reader, layer, hook_name, path)``
- ``features(sae, feature_id, label, label_source, score, density, description)`` — one row per
  (latent, label source); several sources may label one latent.
- ``activations(doc_id, feature_id, value, total, n_active)`` — ``value`` is the max over the
  document's pooled tokens, ``total`` the sum, ``n_active`` the number of tokens where the latent
  fired; mean pooling is ``total / documents.n_tokens``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import duckdb
import numpy as np
import polars as pl

from .errors import UserError
from .ids import corpus_range, doc_id  # noqa: F401 - doc_id is re-exported for scripts
from .layout import SCHEMA as LAYOUT_SCHEMA
from .stats import SCHEMA as STATS_SCHEMA
from .stats import compute as compute_stats
from .stats import write as write_stats

SCHEMA = """
CREATE TABLE IF NOT EXISTS corpora (
    corpus_id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    source TEXT,
    n_docs BIGINT,
    reader TEXT,
    layer INTEGER,
    sae TEXT,
    pooling TEXT,
    created_at TIMESTAMP DEFAULT current_timestamp,
    n_tokens BIGINT,
    config JSON
);
CREATE TABLE IF NOT EXISTS documents (
    doc_id BIGINT PRIMARY KEY,
    corpus_id INTEGER NOT NULL,
    row_idx BIGINT NOT NULL,
    text TEXT,
    n_tokens INTEGER,
    meta JSON
);
CREATE TABLE IF NOT EXISTS saes (
    sae TEXT PRIMARY KEY,
    d_in INTEGER,
    d_sae INTEGER,
    activation TEXT,
    k INTEGER,
    reader TEXT,
    layer INTEGER,
    hook_name TEXT,
    path TEXT
);
CREATE TABLE IF NOT EXISTS features (
    sae TEXT NOT NULL,
    feature_id INTEGER NOT NULL,
    label TEXT,
    label_source TEXT NOT NULL,
    score DOUBLE,
    density DOUBLE,
    description TEXT,
    PRIMARY KEY (sae, feature_id, label_source)
);
CREATE TABLE IF NOT EXISTS activations (
    doc_id BIGINT NOT NULL,
    feature_id INTEGER NOT NULL,
    value FLOAT NOT NULL,
    total FLOAT,
    n_active INTEGER
);
"""


log = logging.getLogger(__name__)

# label_source of the offline c-TF-IDF labels (saeembed.labels_offline); ranked below every other source
OFFLINE_LABEL_SOURCE = "offline-ctfidf"


DUCKDB_MAGIC = b"DUCK"  # bytes 8..11 of every DuckDB database file


def check_store_file(path: Path) -> bool:
    """True when ``path`` is an existing DuckDB database, False when there is nothing there yet.

    Refuses anything else: DuckDB would report "stored" into a .parquet file given as --store and
    keep nothing. A 0-byte file (left by a crash during creation) holds no data and counts as new.
    """
    if path.is_dir():
        raise UserError(f"store {path} is a directory; pass the path of a .duckdb file")
    if not path.exists():
        return False
    if path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[8:12] != DUCKDB_MAGIC:
        raise UserError(f"{path} exists and is not a DuckDB store; pass a new file name for a new store or the "
                        "path of an existing store")
    return True


def _create(path: Path, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """Create a new store file with the schema, or leave nothing behind (disk full, no permission)."""
    if path.exists() and path.stat().st_size == 0:  # the empty leftover of an earlier failed creation
        path.unlink()
    con = None
    try:
        con = duckdb.connect(str(path), config=config)
        con.execute(SCHEMA)
        con.execute(STATS_SCHEMA)
        con.execute(LAYOUT_SCHEMA)
        con.execute("CHECKPOINT")
        return con
    except (duckdb.Error, OSError) as exc:
        if con is not None:
            con.close()
        for leftover in (path, Path(f"{path}.wal")):
            leftover.unlink(missing_ok=True)
        raise UserError(f"cannot create store {path}: {str(exc).splitlines()[0]}; check free disk space and "
                        "permissions") from None


DEFAULT_WAIT_S = 120.0  # how long a command waits for another process to release the store


def lock_wait_seconds(wait: float | None = None) -> float:
    """``wait`` if given, else ``SAEEMBED_WAIT`` (seconds), else :data:`DEFAULT_WAIT_S`."""
    if wait is not None:
        return max(0.0, float(wait))
    env = os.environ.get("SAEEMBED_WAIT", "").strip()
    try:
        return max(0.0, float(env)) if env else DEFAULT_WAIT_S
    except ValueError:
        raise UserError(f"SAEEMBED_WAIT={env!r} is not a number of seconds; set it to e.g. 60") from None


def _open_waiting(path: Path, read_only: bool, config: dict[str, Any], wait: float) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, retried while another process holds a conflicting lock, for at most ``wait`` s.

    Why: DuckDB allows one writer, or many readers, per file across processes. A second writer (or a
    reader during an ingest) used to fail at once, sometimes after hours of encoding; now it waits
    its turn, says so once on stderr, and gives up with one line when the wait is over.
    """
    deadline = time.monotonic() + wait
    delay, told = 0.05, False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            msg = str(exc).splitlines()[0]
            if "lock" not in msg.lower():
                raise UserError(f"cannot open store {path}: {msg}; check the path") from None
            if time.monotonic() >= deadline:
                raise UserError(f"store {path} is still in use by another process after {wait:.0f} s ({msg}); "
                                "let it finish, or wait longer with --wait SECONDS / SAEEMBED_WAIT") from None
            if not told:
                log.warning("waiting up to %.0f s for store %s: another process is using it", wait, path)
                told = True
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)


def connect(path: str | Path, read_only: bool = False, external_access: bool = True,
            wait: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open a store, waiting (bounded) for other processes' locks.

    Read-only opens refuse a missing file instead of creating an empty one; any existing file that
    is not a DuckDB database is refused.
    """
    path = Path(path)
    exists = check_store_file(path)
    if read_only and not exists:
        raise UserError(f"store {path} does not exist; encode a corpus into it first "
                        f"(saeembed encode ... --store {path})")
    config: dict[str, Any] = {}
    if not external_access and not read_only:
        config["enable_external_access"] = False
    if not exists:
        return _create(path, config)
    con = _open_waiting(path, read_only, config, lock_wait_seconds(wait))
    if not read_only:
        con.execute(SCHEMA)
        con.execute(STATS_SCHEMA)
        con.execute(LAYOUT_SCHEMA)
    else:
        # Parquet-kept corpora join the table in a temporary `activations` view; without external
        # access only their registered files stay readable (see saeembed.layout)
        from .layout import attach

        try:
            attach(con, external_access)
        except BaseException:
            con.close()
            raise
    return con


class StoreReader:
    """Queries over a store; every method returns polars frames (or CSR for embeddings)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def sql(self, query: str, params: list | dict | None = None) -> pl.DataFrame:
        try:
            rel = self.con.sql(query, params=params) if params is not None else self.con.sql(query)
            return rel.pl() if rel is not None else pl.DataFrame()
        except duckdb.Error as exc:
            raise UserError(f"SQL error: {str(exc).splitlines()[0]}") from None

    def has_tables(self) -> bool:
        # duckdb_tables() costs a third of information_schema.tables, and every lookup of a corpus asks
        return bool(self.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'corpora'"
                                     ).fetchall()[0][0])

    @staticmethod
    def empty_corpora() -> pl.DataFrame:
        return pl.DataFrame(schema={"corpus_id": pl.Int32, "name": pl.String})

    def corpora(self) -> pl.DataFrame:
        if not self.has_tables():
            return self.empty_corpora()
        return self.sql(
            "SELECT corpus_id, name, n_docs, n_tokens, reader, layer, sae, pooling, source, created_at "
            "FROM corpora ORDER BY corpus_id")

    def corpus(self, name: str) -> dict[str, Any]:
        rows = self.sql("SELECT * FROM corpora WHERE name = ?", [name]) if self.has_tables() else pl.DataFrame()
        if rows.height == 0:
            known = ", ".join(self.corpora()["name"].to_list()) or "none"
            raise UserError(f"no corpus named {name!r} in this store (corpora: {known}); check the name")
        return rows.row(0, named=True)

    def features(self, sae: str | None = None, feature_ids: Iterable[int] | None = None) -> pl.DataFrame:
        """One row per latent with its preferred label (only ``feature_ids`` when given: an analysis
        that reports 200 latents need not rank the labels of all 65,536).

        Imported and LLM labels beat the offline c-TF-IDF fallback whatever their scores (the
        scores measure different things: detection F1 vs the share of top contexts with the top
        term); within a kind, the highest score wins.
        """
        conds, params = [], {}
        if sae:
            conds.append("sae = $sae")
            params["sae"] = sae
        if feature_ids is not None:
            conds.append("feature_id IN (SELECT unnest($ids::INTEGER[]))")
            params["ids"] = [int(f) for f in feature_ids]
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        return self.sql(
            f"""
            SELECT sae, feature_id, label, label_source, score, density, description FROM (
              SELECT *, row_number() OVER (PARTITION BY sae, feature_id
                         ORDER BY (label_source = $offline), score DESC NULLS LAST, label_source) AS rk
              FROM features {where}) WHERE rk = 1 ORDER BY sae, feature_id
            """,
            {"offline": OFFLINE_LABEL_SOURCE, **params},
        )

    def embeddings(self, corpus: str, pooling: str = "max") -> tuple[Any, np.ndarray]:
        """The corpus as a scipy CSR matrix [n_docs, d_sae] plus its doc ids (row order).

        ``pooling``: ``max`` (default), ``sum``, ``mean`` (sum / pooled tokens) or ``count``.
        """
        from scipy import sparse

        info = self.corpus(corpus)
        d_sae = self.con.execute("SELECT d_sae FROM saes WHERE sae = ?", [info["sae"]]).fetchall()[0][0]
        expr = {"max": "a.value", "sum": "a.total", "count": "a.n_active",
                "mean": "a.total / greatest(d.n_tokens, 1)"}.get(pooling)
        if expr is None:
            raise UserError(f"unknown pooling {pooling!r}; use max, sum, mean or count")
        docs = self.con.execute(
            "SELECT doc_id FROM documents WHERE corpus_id = ? ORDER BY doc_id", [info["corpus_id"]]
        ).fetchnumpy()["doc_id"]
        # the corpus is one doc_id range, which prunes row groups; only mean pooling needs the
        # documents' token counts (a join is 2× slower on the latent-major layout)
        lo, hi = corpus_range(info["corpus_id"])
        source = ("activations a JOIN documents d USING (doc_id)" if pooling == "mean" else "activations a")
        acts = self.con.execute(
            f"""SELECT a.doc_id, a.feature_id, ({expr})::FLOAT AS v FROM {source}
                WHERE a.doc_id BETWEEN ? AND ?""",
            [lo, hi],
        ).fetchnumpy()
        rows = np.searchsorted(docs, acts["doc_id"])
        mat = sparse.csr_matrix(
            (acts["v"].astype(np.float32), (rows, acts["feature_id"].astype(np.int64))),
            shape=(len(docs), int(d_sae)),
        )
        mat.sort_indices()
        return mat, docs


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All-or-nothing writes: a failure (or a kill) leaves the store as it was."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def register_sae(con: duckdb.DuckDBPyConnection, sae_id: str, info: dict[str, Any],
                 labels: pl.DataFrame | None) -> None:
    """Record an SAE once, with the labels that ship beside its weights."""
    exists = con.execute("SELECT 1 FROM saes WHERE sae = ?", [sae_id]).fetchall()
    if exists:
        return
    con.execute(
        "INSERT INTO saes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [sae_id, info["d_in"], info["d_sae"], info["activation"], info.get("k"), info.get("reader"),
         info.get("layer"), info.get("hook_name"), info.get("path")],
    )
    if labels is not None and labels.height:
        frame = labels.with_columns(pl.lit(sae_id).alias("sae"))
        for col, dtype in (("score", pl.Float64), ("density", pl.Float64), ("description", pl.String)):
            if col not in frame.columns:
                frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(col))
        frame = frame.select("sae", "feature_id", "label", "label_source", "score", "density", "description")
        con.register("_labels", frame.to_arrow())
        con.execute("INSERT INTO features SELECT * FROM _labels")
        con.unregister("_labels")


def next_corpus_id(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT coalesce(max(corpus_id), 0) + 1 FROM corpora").fetchall()[0][0])


def ingest_corpus(
    con: duckdb.DuckDBPyConnection,
    *,
    name: str,
    source: str,
    reader: str,
    layer: int,
    sae: str,
    pooling: str,
    config: dict[str, Any],
    documents: pl.DataFrame,
    activation_files: list[str],
    filesystem: Any = None,
    keep: str = "duckdb",
    parquet_dir: str | None = None,
    store_path: str | Path | None = None,
) -> int:
    """Insert one corpus (registry row, documents, activations) inside the caller's transaction.

    ``documents`` has row_idx, text, n_tokens, meta; ``activation_files`` are Parquet shards with
    row_idx, feature_id, value, total, n_active (on ``filesystem``, a pyarrow filesystem, when
    given). ``keep="parquet"`` keeps the activations as sorted Parquet files registered with the
    store instead of copying them into it (:mod:`saeembed.layout`).
    """
    corpus_id = next_corpus_id(con)
    lo, _ = corpus_range(corpus_id)
    docs = documents.with_columns(
        (pl.lit(lo, dtype=pl.Int64) + pl.col("row_idx")).alias("doc_id"),
        pl.lit(corpus_id, dtype=pl.Int32).alias("corpus_id"),
    ).select("doc_id", "corpus_id", "row_idx", "text", "n_tokens", "meta")
    con.execute(
        "INSERT INTO corpora (corpus_id, name, source, n_docs, reader, layer, sae, pooling, n_tokens, config) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [corpus_id, name, source, docs.height, reader, layer, sae, pooling,
         int(docs["n_tokens"].sum()), json.dumps(config)],
    )
    con.register("_docs", docs.to_arrow())
    con.execute("INSERT INTO documents SELECT * FROM _docs")
    con.unregister("_docs")
    hi = corpus_range(corpus_id)[1]
    if keep == "parquet":
        import pyarrow.dataset as pads

        if store_path is None:
            raise ValueError("keep='parquet' needs store_path (the Parquet folder defaults to STORE.parquet)")

        from .layout import keep_as_parquet

        shards = pads.dataset([str(f) for f in activation_files], format="parquet", filesystem=filesystem)
        keep_as_parquet(con, corpus_id=corpus_id, name=name, lo=lo, hi=hi, shards=shards,
                        store_path=store_path, parquet_dir=parquet_dir)
        return corpus_id
    if activation_files:
        # Activations are written latent-major within the corpus: the corpus stays one contiguous
        # doc_id block (range filters prune), and each latent's rows are contiguous, so search and
        # example lookups over a few latents skip almost every row group (10^6 docs: 0.29 s → 0.03 s).
        # The shard files are handed over as an explicit list through pyarrow: DuckDB's read_parquet
        # expands glob characters, and a store path may contain them ("runs[1].duckdb").
        import pyarrow.dataset as pads

        con.register("_shards", pads.dataset([str(f) for f in activation_files], format="parquet",
                                             filesystem=filesystem))
        con.execute(
            f"""INSERT INTO activations
                SELECT {int(lo)}::BIGINT | row_idx, feature_id, value, total, n_active
                FROM _shards ORDER BY feature_id, row_idx"""
        )
        con.unregister("_shards")
    write_stats(con, corpus_id, compute_stats(con, lo, hi))
    return corpus_id
