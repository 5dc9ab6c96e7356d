"""Per-corpus length strata, kept at ingest beside the latent statistics: what a length-controlled
diff needs without reading any document or activation.

Why: max-pooled presence grows with document length, so diff compares corpora at equal length
(:mod:`saeembed.analysis.length`). It does so from counts: for every corpus, the documents in each
content-token length stratum, and for every latent the documents of each stratum where it is
present. The strata are fixed and shared by every corpus of every store: stratum
``floor(4 · log2(content tokens))``, a quarter octave wide (documents of 108 to 127 tokens share
one), so any two corpora can be compared stratum by stratum and diff can merge neighbours.

Tables (queries ``queries/length_strata.sql`` and ``queries/latent_length_strata.sql``):

- ``length_strata(corpus_id, stratum, n_docs, mean_log_tokens)``: documents per stratum and their
  mean log content tokens;
- ``latent_strata(corpus_id, feature_id, stratum, n_present)``: documents of the stratum where the
  latent is present (max-pooled value > 0); a latent absent from a stratum has no row;
- ``corpus_lengths(corpus_id, n_docs, mean_tokens, median_tokens, bins_per_octave)``: the corpus'
  length in one line (every diff output states it), and the mark that the corpus' strata are
  complete. Corpora stored before these tables get them computed on first use and kept, as
  :mod:`saeembed.store.stats` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ..ids import corpus_range
from .queries import load_query
from .stats import kept_statistics

if TYPE_CHECKING:
    import duckdb

    from .corpusinfo import CorpusInfo
    from .handle import Store

BINS_PER_OCTAVE = 4
STRATA_TABLES = ("length_strata", "latent_strata", "corpus_lengths")
SCHEMA = """
CREATE TABLE IF NOT EXISTS length_strata (
    corpus_id INTEGER NOT NULL,
    stratum SMALLINT NOT NULL,
    n_docs BIGINT NOT NULL,
    mean_log_tokens DOUBLE NOT NULL,
    PRIMARY KEY (corpus_id, stratum)
);
CREATE TABLE IF NOT EXISTS latent_strata (
    corpus_id INTEGER NOT NULL,
    feature_id INTEGER NOT NULL,
    stratum SMALLINT NOT NULL,
    n_present INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS corpus_lengths (
    corpus_id INTEGER PRIMARY KEY,
    n_docs BIGINT NOT NULL,
    mean_tokens DOUBLE,
    median_tokens DOUBLE,
    bins_per_octave INTEGER NOT NULL,
    computed_at TIMESTAMP DEFAULT current_timestamp
);
"""


@dataclass(frozen=True)
class CorpusLengths:
    """One corpus' documents by content-token length: the summary and the strata."""

    n_docs: int
    mean_tokens: float
    median_tokens: float
    strata: np.ndarray  # stratum ids, ascending
    docs: np.ndarray  # documents per stratum
    mean_log: np.ndarray  # mean log content tokens per stratum
    latents: dict[str, np.ndarray]  # feature_id, stratum, n_present of every (latent, stratum) with n_present > 0

    def present(self, d_sae: int, first: int, n_strata: int) -> np.ndarray:
        """[n_strata, d_sae] documents with each latent present in strata ``first .. first + n_strata - 1``
        (which must hold all of this corpus' strata); floats, what the tests compute with, one contiguous
        row of latents per stratum."""
        out = np.zeros(n_strata * int(d_sae), dtype=np.float64)
        if len(self.latents["feature_id"]):
            at = (self.latents["stratum"].astype(np.int64) - first) * int(d_sae) + self.latents["feature_id"]
            out[at] = self.latents["n_present"]
        return out.reshape(n_strata, int(d_sae))

    def on(self, first: int, n_strata: int) -> tuple[np.ndarray, np.ndarray]:
        """(documents, mean log tokens) per stratum ``first .. first + n_strata - 1`` (0 where this corpus
        has none)."""
        docs, mean_log = np.zeros(n_strata, np.int64), np.zeros(n_strata)
        at = self.strata.astype(np.int64) - first
        docs[at], mean_log[at] = self.docs, self.mean_log
        return docs, mean_log


def stratum_of(n_tokens: np.ndarray) -> np.ndarray:
    """The length stratum of documents with ``n_tokens`` content tokens (the SQL's expression)."""
    return np.floor(BINS_PER_OCTAVE * np.log2(np.maximum(np.asarray(n_tokens, np.float64), 1))).astype(np.int16)


def _summary(con: duckdb.DuckDBPyConnection, corpus_id: int) -> pl.DataFrame:
    return con.sql(load_query("length_strata"), params={"corpus": int(corpus_id),
                                                        "per_octave": BINS_PER_OCTAVE}).pl()


def latent_counts(con: duckdb.DuckDBPyConnection, corpus_id: int, threshold: float = 0.0) -> dict[str, np.ndarray]:
    """feature_id, stratum, n_present of one corpus at ``threshold`` (one scan of its activations)."""
    lo, hi = corpus_range(int(corpus_id))
    return _arrays(con.sql(load_query("latent_length_strata"), params={
        "corpus": int(corpus_id), "lo": int(lo), "hi": int(hi),
        "per_octave": BINS_PER_OCTAVE, "threshold": float(threshold)}).to_arrow_table())


def _arrays(fetched: Any) -> dict[str, np.ndarray]:
    """The three columns of a (feature_id, stratum, n_present) Arrow table as numpy arrays: through
    Arrow, half the CPU of DuckDB's fetchnumpy for the ≈10^6 rows of a large corpus."""
    return {"feature_id": fetched.column("feature_id").to_numpy().astype(np.int64, copy=False),
            "stratum": fetched.column("stratum").to_numpy().astype(np.int16, copy=False),
            "n_present": fetched.column("n_present").to_numpy().astype(np.int64, copy=False)}


def compute(con: duckdb.DuckDBPyConnection, corpus_id: int) -> CorpusLengths:
    """The length strata of one corpus, from its documents and activations."""
    strata = _summary(con, corpus_id)
    total = con.execute("SELECT count(*), avg(n_tokens), median(n_tokens) FROM documents WHERE corpus_id = ?",
                        [int(corpus_id)]).fetchall()[0]
    return _assemble(total, strata, latent_counts(con, corpus_id))


def _assemble(total: tuple, strata: pl.DataFrame, latents: dict[str, np.ndarray]) -> CorpusLengths:
    strata = strata.sort("stratum")
    return CorpusLengths(int(total[0]), float(total[1] or 0.0), float(total[2] or 0.0),
                         strata["stratum"].to_numpy().astype(np.int16), strata["n_docs"].to_numpy().astype(np.int64),
                         strata["mean_log_tokens"].to_numpy().astype(np.float64), latents)


def write(con: duckdb.DuckDBPyConnection, corpus_id: int, lengths: CorpusLengths) -> None:
    """Insert one corpus' strata (inside the caller's transaction)."""
    cid = int(corpus_id)
    for table in STRATA_TABLES:
        con.execute(f"DELETE FROM {table} WHERE corpus_id = ?", [cid])
    frames = {"length_strata": pl.DataFrame({"stratum": lengths.strata, "n_docs": lengths.docs,
                                             "mean_log_tokens": lengths.mean_log}),
              "latent_strata": pl.DataFrame(lengths.latents).cast({"feature_id": pl.Int32})}
    for table, frame in frames.items():
        if frame.height:
            con.register("_strata", frame.with_columns(pl.lit(cid, pl.Int32).alias("corpus_id")).to_arrow())
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _strata")
            con.unregister("_strata")
    con.execute("INSERT INTO corpus_lengths (corpus_id, n_docs, mean_tokens, median_tokens, bins_per_octave) "
                "VALUES (?, ?, ?, ?, ?)", [cid, lengths.n_docs, lengths.mean_tokens, lengths.median_tokens,
                                           BINS_PER_OCTAVE])


def keep_strata(con: duckdb.DuckDBPyConnection, corpus_id: int) -> None:
    """Compute and write one corpus' strata at ingest (inside the caller's transaction)."""
    write(con, corpus_id, compute(con, int(corpus_id)))


def _read(con: duckdb.DuckDBPyConnection, corpus_id: int) -> CorpusLengths:
    total = con.execute("SELECT n_docs, mean_tokens, median_tokens FROM corpus_lengths WHERE corpus_id = ?",
                        [corpus_id]).fetchall()[0]
    strata = con.sql("SELECT stratum, n_docs, mean_log_tokens FROM length_strata WHERE corpus_id = ?",
                     params=[corpus_id]).pl()
    latents = con.sql("SELECT feature_id, stratum, n_present FROM latent_strata WHERE corpus_id = ?",
                      params=[corpus_id]).to_arrow_table()
    return _assemble(total, strata, _arrays(latents))


def corpus_lengths(store: Store, info: CorpusInfo) -> CorpusLengths:
    """The corpus' length strata: read from the tables, or (a corpus stored before them) computed from
    its documents and activations on first use and kept."""
    lengths, _ = kept_statistics(store, info, "corpus_lengths", _read, lambda con, i: compute(con, int(i.corpus_id)),
                                 write)
    return lengths


__all__ = ["BINS_PER_OCTAVE", "SCHEMA", "STRATA_TABLES", "CorpusLengths", "compute", "corpus_lengths", "keep_strata",
           "latent_counts", "stratum_of", "write"]
