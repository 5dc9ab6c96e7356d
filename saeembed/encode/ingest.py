"""The last step of an encode: every shard is on disk, so the corpus enters the store in one
transaction (registry row, documents, activations) and the work folder is removed.

Nothing before this step writes to the store, so a crash at any earlier point leaves the store as
it was; a crash inside the transaction rolls it back.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from .. import store as store_mod
from ..corpus import Corpus
from .plan import POOLINGS, EncodePlan
from .workdir import act_path, docs_path, remove_work_dir


def documents_frame(corpus: Corpus, shard_docs: list[pl.DataFrame]) -> pl.DataFrame:
    """row_idx, text, n_tokens, meta, token_ends for every document, from the corpus and the shards'
    per-document files (shards an older version wrote have no token_ends)."""
    doc_tokens = pl.concat(shard_docs, how="diagonal_relaxed")
    spans = [pl.col("token_ends") if "token_ends" in doc_tokens.columns
             else pl.lit(None, pl.List(pl.Int32)).alias("token_ends")]
    col = "messages" if corpus.kind == "messages" else "text"
    return corpus.docs.join(doc_tokens, on="row_idx", how="left").select(
        "row_idx", pl.col(col).alias("text"), pl.col("n_tokens").cast(pl.Int32), "meta", *spans)


def sae_record(plan: EncodePlan) -> dict[str, Any]:
    cfg, layer = plan.loaded.sae.cfg, plan.settings.layer
    return {"d_in": cfg.d_in, "d_sae": cfg.d_sae, "activation": cfg.activation, "k": cfg.k,
            "reader": plan.reader.name, "layer": layer,
            "hook_name": cfg.hook_name or f"blocks.{layer}.hook_resid_post", "path": str(plan.loaded.path)}


def ingest(plan: EncodePlan, wait: float | None = None, keep: str = "duckdb",
           parquet_dir: str | None = None) -> dict[str, Any]:
    """Store the finished corpus in one transaction (``keep="parquet"``: its activations as registered
    Parquet files, :mod:`saeembed.store.parquet`); returns its registry row."""
    documents = documents_frame(plan.corpus, [pl.read_parquet(docs_path(plan.work_dir, s), glob=False)
                                              for s in range(plan.n_shards)])
    s = plan.settings
    con = store_mod.connect(plan.store_path, wait=wait)
    try:
        with store_mod.transaction(con):
            store_mod.register_sae(con, plan.loaded.sae_id, sae_record(plan), plan.loaded.labels)
            store_mod.ingest_corpus(
                con, name=plan.name, source=plan.corpus.source, reader=s.reader, layer=s.layer, sae=s.sae,
                pooling=POOLINGS, config=s.as_dict(), documents=documents,
                activation_files=[str(act_path(plan.work_dir, i)) for i in range(plan.n_shards)],
                keep=keep, parquet_dir=parquet_dir, store_path=plan.store_path)
        row = store_mod.StoreReader(con).corpus(plan.name)
    finally:
        con.close()
    remove_work_dir(plan.work_dir, plan.store_path)
    return row


__all__ = ["ingest", "documents_frame"]
