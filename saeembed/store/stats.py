"""Per-corpus latent statistics, computed once when a corpus is stored: what diff, search and
correlate need without reading every activation of the corpus.

Table ``latent_stats(corpus_id, feature_id, n_present, p90, max_value, top_docs)`` (query
``queries/latent_stats.sql``): documents where the latent is present, the 90th percentile of its
non-zero activations, its largest activation and the 8 documents where it fires most strongly.
``corpus_stats(corpus_id)`` marks the corpora whose rows are complete (a latent that never fires
has no row). Corpora stored before this table existed get their statistics computed on first use
(one scan, as the analyses used to do every time) and kept: written after the read-only call that
needed them, when no other process holds the file (otherwise computed again next time).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import polars as pl

from ..memo import Memo
from .queries import load_query

if TYPE_CHECKING:
    import duckdb

    from .corpusinfo import CorpusInfo
    from .handle import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
_COMPUTED: Memo[Any] = Memo("corpus statistics computed on first use", max_entries=8)
_COMPLETE_ON: weakref.WeakKeyDictionary[Any, set[tuple[str, int]]] = weakref.WeakKeyDictionary()

STATS_TOP_DOCS = 8  # example documents kept per latent (diff shows 3 by default)
SCHEMA = """
CREATE TABLE IF NOT EXISTS latent_stats (
    corpus_id INTEGER NOT NULL,
    feature_id INTEGER NOT NULL,
    n_present BIGINT NOT NULL,
    p90 DOUBLE,
    max_value FLOAT,
    top_docs BIGINT[],
    PRIMARY KEY (corpus_id, feature_id)
);
CREATE TABLE IF NOT EXISTS corpus_stats (
    corpus_id INTEGER PRIMARY KEY,
    computed_at TIMESTAMP DEFAULT current_timestamp
);
"""
STATS_SCHEMA = {"feature_id": pl.Int32, "n_present": pl.Int64, "p90": pl.Float64, "max_value": pl.Float32,
                "top_docs": pl.List(pl.Int64)}


def _query() -> str:
    return load_query("latent_stats")


def compute(con: duckdb.DuckDBPyConnection, lo: int, hi: int) -> pl.DataFrame:
    """The statistics of the corpus whose doc ids lie in [lo, hi], from its activations."""
    df = con.sql(_query(), params={"lo": int(lo), "hi": int(hi)}).pl()
    return df.cast(STATS_SCHEMA) if df.height else pl.DataFrame(schema=STATS_SCHEMA)


def write(con: duckdb.DuckDBPyConnection, corpus_id: int, stats: pl.DataFrame) -> None:
    """Insert one corpus' statistics (inside the caller's transaction)."""
    con.execute("DELETE FROM latent_stats WHERE corpus_id = ?", [int(corpus_id)])
    con.execute("DELETE FROM corpus_stats WHERE corpus_id = ?", [int(corpus_id)])
    if stats.height:
        con.register("_stats", stats.with_columns(pl.lit(int(corpus_id), pl.Int32).alias("corpus_id")).to_arrow())
        con.execute("INSERT INTO latent_stats SELECT corpus_id, feature_id, n_present, p90, max_value, top_docs "
                    "FROM _stats")
        con.unregister("_stats")
    con.execute("INSERT INTO corpus_stats (corpus_id) VALUES (?)", [int(corpus_id)])


def corpus_stats(store: Store, info: CorpusInfo, columns: Sequence[str] | None = None,
                 feature_ids: Sequence[int] | None = None) -> pl.DataFrame:
    """feature_id, n_present, p90, max_value, top_docs of one corpus (latents that fire at least once).

    Read from the table; for a corpus stored before the table existed, computed from its
    activations and kept (see the module docstring). ``columns`` (feature_id is always included)
    and ``feature_ids`` narrow the read: diff needs only n_present of every latent, and the
    example documents only of the latents it reports — reading all 65,536 ``top_docs`` lists was
    most of diff's time at any corpus size.
    """
    cols = ["feature_id", *[c for c in (columns or STATS_SCHEMA) if c != "feature_id"]]
    unknown = set(cols) - set(STATS_SCHEMA)
    if unknown:
        raise ValueError(f"unknown latent statistics column(s): {sorted(unknown)}")
    schema = {c: STATS_SCHEMA[c] for c in cols}

    def read(con: duckdb.DuckDBPyConnection, cid: int) -> pl.DataFrame:
        where, params = "corpus_id = $c", {"c": cid}
        if feature_ids is not None:
            where += " AND feature_id IN (SELECT unnest($f::INTEGER[]))"
            params["f"] = [int(f) for f in feature_ids]
        # sorted in polars: DuckDB's ORDER BY tripled the cost of this read
        return con.sql(f"SELECT {', '.join(cols)} FROM latent_stats WHERE {where}",
                       params=params).pl().cast(schema).sort("feature_id")

    stats, from_table = kept_statistics(store, info, "corpus_stats", read,
                                        lambda con, i: compute(con, i["lo"], i["hi"]), write)
    if from_table:
        return stats
    part = stats if feature_ids is None else stats.filter(pl.col("feature_id").is_in([int(f) for f in feature_ids]))
    return part.select(cols)


def kept_statistics(store: Store, info: CorpusInfo, marker: str, read: Callable[[duckdb.DuckDBPyConnection, int], T],
                    compute: Callable[[duckdb.DuckDBPyConnection, Any], T],
                    write: Callable[[duckdb.DuckDBPyConnection, int, T], None]) -> tuple[T, bool]:
    """Statistics of one corpus kept at ingest: ``(read(...), True)`` when the ``marker`` table has the
    corpus' row, else ``(compute(...), False)``, kept by ``write`` once the read-only call is over.

    Why one helper: every statistic kept at ingest must also serve stores written before it existed,
    the same way: computed once per process (even when it cannot be kept because another process
    holds the file) and written when the store is free.
    """
    con = store.con
    cid = int(info.corpus_id)
    if _complete(con, marker, cid):
        return read(con, cid), True
    key = (marker, str(store.path), cid, str(info.created_at))
    computed = _COMPUTED.get_or_build(key, lambda: compute(con, info))
    # skipped while another process holds the store (the next writer computes them)
    store.write_after_reading(lambda w: _keep(w, marker, cid, lambda c: write(c, cid, computed)),
                              f"keep the statistics ({marker}) of corpus {cid}")
    return computed, False


def _complete(con: duckdb.DuckDBPyConnection, marker: str, corpus_id: int) -> bool:
    """Whether the corpus has a row in ``marker`` (a store from before that table has none).

    A yes is remembered for the connection (rows are only ever added in a writer's transaction,
    and dropping the corpus ends its analyses anyway): diff asks several times per call, and each
    ask is two catalog queries.
    """
    known = _COMPLETE_ON.setdefault(con, set())
    if (marker, corpus_id) in known:
        return True
    # duckdb_tables(), not information_schema: a third of the cost
    has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [marker]).fetchall()[0][0]
    done = bool(has and con.execute(f"SELECT count(*) FROM {marker} WHERE corpus_id = ?",
                                    [corpus_id]).fetchall()[0][0])
    if done:
        known.add((marker, corpus_id))
    return done


def _keep(con: duckdb.DuckDBPyConnection, marker: str, corpus_id: int,
          write: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
    """Keep statistics computed on first use (on a write connection), unless a writer already did."""
    done = con.execute(f"SELECT count(*) FROM {marker} WHERE corpus_id = ?", [corpus_id]).fetchall()[0][0]
    if not done:
        con.execute("BEGIN TRANSACTION")
        write(con)
        con.execute("COMMIT")


def present_counts(stats: pl.DataFrame, d_sae: int) -> np.ndarray:
    """Documents with each latent present, as an array over all d_sae latents."""
    out = np.zeros(int(d_sae), dtype=np.int64)
    out[stats["feature_id"].to_numpy().astype(np.int64)] = stats["n_present"].to_numpy()
    return out


__all__ = ["SCHEMA", "STATS_TOP_DOCS", "compute", "write", "corpus_stats", "kept_statistics", "present_counts"]
