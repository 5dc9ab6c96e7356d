"""Writes to a store: SAEs with their shipped labels, and whole corpora, each inside one transaction."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import duckdb
import polars as pl

from ..ids import corpus_range
from .stats import compute as compute_stats
from .stats import write as write_stats
from .strata import keep_strata


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


TOKEN_POSITIONS = "token_positions"  # corpora.config key: whether peak_pos and token_ends were stored


def shards_have_positions(files: list[str], filesystem: Any = None) -> bool:
    """Whether every activation shard carries peak_pos (shards an older version left in a work folder,
    resumed, do not)."""
    import pyarrow.parquet as pq

    return bool(files) and all("peak_pos" in pq.read_schema(str(f), filesystem=filesystem).names for f in files)


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

    ``documents`` has row_idx, text, n_tokens, meta (and token_ends where known); ``activation_files``
    are Parquet shards with row_idx, feature_id, value, total, n_active and peak_pos (on
    ``filesystem``, a pyarrow filesystem, when given). Shards without the
    positions (written by an older version, resumed) store the corpus without them, and its config
    says so (``token_positions``). ``keep="parquet"`` keeps the activations as sorted Parquet files
    registered with the store instead of copying them into it (:mod:`saeembed.store.parquet`).
    """
    corpus_id = next_corpus_id(con)
    lo, _ = corpus_range(corpus_id)
    positions = shards_have_positions(activation_files, filesystem)
    if "token_ends" not in documents.columns or not positions:
        documents = documents.with_columns(pl.lit(None, pl.List(pl.Int32)).alias("token_ends"))
    docs = documents.with_columns(
        (pl.lit(lo, dtype=pl.Int64) + pl.col("row_idx")).alias("doc_id"),
        pl.lit(corpus_id, dtype=pl.Int32).alias("corpus_id"),
    ).select("doc_id", "corpus_id", "row_idx", "text", "n_tokens", "meta", "token_ends")
    con.execute(
        "INSERT INTO corpora (corpus_id, name, source, n_docs, reader, layer, sae, pooling, n_tokens, config) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [corpus_id, name, source, docs.height, reader, layer, sae, pooling,
         int(docs["n_tokens"].sum()), json.dumps({**config, TOKEN_POSITIONS: positions})],
    )
    con.register("_docs", docs.to_arrow())
    con.execute(f"INSERT INTO documents ({', '.join(docs.columns)}) SELECT * FROM _docs")
    con.unregister("_docs")
    hi = corpus_range(corpus_id)[1]
    if keep == "parquet":
        import pyarrow.dataset as pads

        if store_path is None:
            raise ValueError("keep='parquet' needs store_path (the Parquet folder defaults to STORE.parquet)")

        from .parquet import keep_as_parquet

        shards = pads.dataset([str(f) for f in activation_files], format="parquet", filesystem=filesystem)
        keep_as_parquet(con, corpus_id=corpus_id, name=name, lo=lo, hi=hi, shards=shards,
                        store_path=store_path, parquet_dir=parquet_dir, positions=positions)
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
        cols = "feature_id, value, total, n_active" + (", peak_pos" if positions else "")
        con.execute(
            f"""INSERT INTO activations (doc_id, {cols})
                SELECT {int(lo)}::BIGINT | row_idx, {cols}
                FROM _shards ORDER BY feature_id, row_idx"""
        )
        con.unregister("_shards")
    write_stats(con, corpus_id, compute_stats(con, lo, hi))
    keep_strata(con, corpus_id)
    return corpus_id
