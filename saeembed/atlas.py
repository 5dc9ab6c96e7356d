"""``saeembed atlas``: a corpus as a table for Apple's Embedding Atlas — 2-D map, top latents, metadata.

Embedding Atlas (``pip install 'saeembed[atlas]'``) gives an interactive map with filters, search
and a features list for free; what it needs from us is one table: the text, ``x``/``y`` of a 2-D
projection (t-SNE, :mod:`saeembed.report.project`) of the documents' SAE embeddings (IDF-weighted
max-pooled latents) or of their dense MiniLM embeddings, the labels of each document's most
characteristic latents (``queries/doc_top_latents.sql``) and the corpus metadata as columns.
The table is written as Parquet, so ``--output FILE`` works without Embedding Atlas installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from .analysis.common import feature_labels
from .analysis.dense import dense_doc_embeddings
from .errors import UserError
from .report.project import idf_weighted, project_vectors
from .store.corpusinfo import corpus_info
from .store.handle import as_store
from .store.queries import run_query

if TYPE_CHECKING:
    from .store.corpusinfo import CorpusInfo
    from .store.handle import Store

ATLAS_HINT = "pip install 'saeembed[atlas]'"
RESERVED = ("doc_id", "row_idx", "text", "x", "y", "top_latent", "top_latents", "latents")


def _sae_xy(store: Store, corpus: str, seed: int) -> np.ndarray:
    x, _ = store.embeddings(corpus)  # rows in doc_id order, like store.documents()
    return project_vectors(idf_weighted(x, np.asarray((x > 0).sum(axis=0)).ravel(), x.shape[0]), seed)


def _dense_xy(store: Store, info: CorpusInfo, seed: int) -> np.ndarray:
    _, emb = dense_doc_embeddings(store, info, cache=True)  # doc_id order, like store.documents()
    return project_vectors(emb, seed)


def _meta_columns(meta: list[str | None]) -> pl.DataFrame:
    """The documents' meta JSON as columns (nested values as JSON text; reserved names prefixed)."""
    rows = [json.loads(m) if m else {} for m in meta]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cols = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        if any(isinstance(v, (list, dict)) for v in vals):
            vals = [json.dumps(v) if v is not None else None for v in vals]
        name = f"meta_{k}" if k in RESERVED else k
        try:
            cols[name] = pl.Series(name, vals, strict=False)
        except (TypeError, pl.exceptions.PolarsError):
            cols[name] = pl.Series(name, [None if v is None else str(v) for v in vals], pl.String)
    return pl.DataFrame(cols, height=len(rows))


def atlas_frame(store: Store | str | Path, corpus: str, *, dense: bool = False, top_latents: int = 5,
                seed: int = 0) -> pl.DataFrame:
    """One row per document: doc_id, row_idx, text, x, y, top_latent, top_latents (labels, best
    first), latents (Embedding Atlas' features list: {feature, index}), then the metadata."""
    if top_latents < 1:
        raise UserError("--top-latents must be at least 1")
    st = as_store(store)
    info = corpus_info(st, corpus)
    docs = st.documents(corpus)
    if docs.height < 4:
        raise UserError(f"corpus {corpus!r} has {docs.height} documents; a map needs at least 4")
    ids = docs["doc_id"].to_numpy()
    xy = _dense_xy(st, info, seed) if dense else _sae_xy(st, corpus, seed)
    tops = run_query(st, "doc_top_latents", {"lo": info.lo, "hi": info.hi, "n_docs": int(info.n_docs),
                                             "k": int(top_latents)})
    labels = dict(feature_labels(st, info.sae).iter_rows())
    top = dict(zip(tops["doc_id"].to_list(), tops["feature_ids"].to_list()))
    names = [[f"{f} {labels.get(f, '')}".strip() for f in top.get(d, [])] for d in ids.tolist()]
    latents = [[{"feature": n, "index": int(f)} for n, f in zip(ns, top.get(d, []))]
               for ns, d in zip(names, ids.tolist())]
    base = pl.DataFrame({
        "doc_id": ids, "row_idx": docs["row_idx"], "text": docs["text"], "x": xy[:, 0], "y": xy[:, 1],
        "top_latent": [ns[0] if ns else None for ns in names],
        "top_latents": pl.Series(names, dtype=pl.List(pl.String)),
        "latents": pl.Series(latents, dtype=pl.List(pl.Struct({"feature": pl.String, "index": pl.Int64}))),
    })
    return pl.concat([base, _meta_columns(docs["meta"].to_list())], how="horizontal")


def atlas_args(path: Path, host: str, port: int) -> list[str]:
    """Embedding Atlas' command line for our table (projection given, so it computes none)."""
    return [str(path), "--text", "text", "--x", "x", "--y", "y", "--features", "latents", "--disable-projection",
            "--host", host, "--port", str(port)]


def open_in_atlas(path: Path, host: str = "127.0.0.1", port: int = 5055) -> None:
    """Run Embedding Atlas on ``path`` in this process (until Ctrl-C)."""
    try:
        from embedding_atlas.cli import main as atlas_main
    except ImportError:
        raise UserError(f"Embedding Atlas is not installed: {ATLAS_HINT} (or pass --output FILE to write the table "
                        "and open it elsewhere)") from None
    sys.argv = ["embedding-atlas", *atlas_args(path, host, port)]
    atlas_main()


def atlas_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("embedding_atlas") is not None


__all__ = ["atlas_frame", "atlas_args", "open_in_atlas", "atlas_installed", "ATLAS_HINT"]
