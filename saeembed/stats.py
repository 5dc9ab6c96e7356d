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
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from .memo import Memo

if TYPE_CHECKING:
    import duckdb

    from .api import Store

log = logging.getLogger(__name__)
_COMPUTED: Memo[pl.DataFrame] = Memo("latent statistics computed on first use", max_entries=8)

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
    from .analysis.common import load_query

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


def corpus_stats(store: Store, info: Any) -> pl.DataFrame:
    """feature_id, n_present, p90, max_value, top_docs of one corpus (latents that fire at least once).

    Read from the table; for a corpus stored before the table existed, computed from its
    activations and kept (see the module docstring).
    """
    con = store.con
    has = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'corpus_stats'"
                      ).fetchall()[0][0]
    if has and con.execute("SELECT count(*) FROM corpus_stats WHERE corpus_id = ?",
                           [int(info["corpus_id"])]).fetchall()[0][0]:
        return con.sql("SELECT feature_id, n_present, p90, max_value, top_docs FROM latent_stats "
                       "WHERE corpus_id = $c ORDER BY feature_id", params={"c": int(info["corpus_id"])}
                       ).pl().cast(STATS_SCHEMA)
    # computed once per process even when it cannot be kept (another connection holds the file)
    key = (str(store.path), int(info["corpus_id"]), str(info.get("created_at")))
    stats = _COMPUTED.get_or_build(key, lambda: compute(con, info["lo"], info["hi"]))
    store.after_reading(lambda: _persist(store, int(info["corpus_id"]), stats))
    return stats


def _persist(store: Store, corpus_id: int, stats: pl.DataFrame) -> None:
    """Keep statistics computed on first use, unless another process holds the store (then the next
    writer computes them)."""
    from . import store as store_mod
    from .errors import UserError

    try:
        con = store_mod.connect(store.path, wait=0)
    except UserError:
        return
    try:
        done = con.execute("SELECT count(*) FROM corpus_stats WHERE corpus_id = ?", [corpus_id]).fetchall()[0][0]
        if not done:
            con.execute("BEGIN TRANSACTION")
            write(con, corpus_id, stats)
            con.execute("COMMIT")
    except Exception:
        log.debug("could not keep latent statistics of corpus %d", corpus_id, exc_info=True)
    finally:
        con.close()


def present_counts(stats: pl.DataFrame, d_sae: int) -> np.ndarray:
    """Documents with each latent present, as an array over all d_sae latents."""
    out = np.zeros(int(d_sae), dtype=np.int64)
    out[stats["feature_id"].to_numpy().astype(np.int64)] = stats["n_present"].to_numpy()
    return out


__all__ = ["SCHEMA", "STATS_TOP_DOCS", "compute", "write", "corpus_stats", "present_counts"]
