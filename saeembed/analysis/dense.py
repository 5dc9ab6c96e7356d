"""MiniLM document embeddings of a corpus, kept in a sidecar beside the store (``STORE.dense/``).

Dense search, hybrid fusion, descriptors, facets and the atlas all need the same vectors; computing
them is the slow part (one MiniLM pass over every document), so they are computed once per corpus and
stamped with the corpus' identity so that a re-encoded corpus never reads stale rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ..embed import DEFAULT_EMBEDDER, get_embedder
from ..fsutil import atomic_write_parquet
from ..names import NAME_MAX, NAME_PATTERN

if TYPE_CHECKING:
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store


def sidecar_name(info: CorpusInfo) -> str:
    """The corpus name when it is in the safe set (every corpus encoded since names are checked),
    else its id: a name from an older store must not become a path."""
    name = str(info.name)
    return name if len(name) <= NAME_MAX and NAME_PATTERN.fullmatch(name) else f"corpus-{info['corpus_id']}"


def aligned_doc_embeddings(store: Store, info: CorpusInfo, doc_ids: np.ndarray, cache: bool = True) -> np.ndarray:
    """MiniLM embeddings of ``doc_ids`` in that order (rows of ``store.embeddings``), from the sidecar;
    raises when the sidecar does not hold exactly those documents."""
    emb_ids, emb = dense_doc_embeddings(store, info, cache)
    pos = np.searchsorted(emb_ids, doc_ids)
    if len(emb_ids) == 0 or not np.array_equal(emb_ids[np.minimum(pos, len(emb_ids) - 1)], doc_ids):
        raise RuntimeError("document embeddings do not match the corpus' documents")
    return emb[pos]


def dense_doc_embeddings(store: Store, info: CorpusInfo, cache: bool) -> tuple[np.ndarray, np.ndarray]:
    """MiniLM embeddings of every document, from the sidecar cache when it matches the corpus."""
    side = Path(str(store.path) + ".dense") / f"{sidecar_name(info)}.parquet"
    stamp = f"{info['corpus_id']}|{info['n_docs']}|{info['created_at']}|{DEFAULT_EMBEDDER}"
    if cache and side.exists():
        try:
            df = pl.read_parquet(side, glob=False)
            if df.height and df["stamp"][0] == stamp:
                return df["doc_id"].to_numpy(), np.stack(df["embedding"].to_numpy()).astype(np.float32)
        except Exception:  # noqa: BLE001 - a damaged cache is recomputed, never fatal
            pass
    docs = store.sql("SELECT doc_id, text FROM documents WHERE corpus_id = ? ORDER BY doc_id", [info.corpus_id])
    emb = get_embedder().embed([str(t or "") for t in docs["text"].to_list()])
    if cache:
        try:
            side.parent.mkdir(parents=True, exist_ok=True)
            frame = pl.DataFrame({"doc_id": docs["doc_id"], "embedding": list(emb), "stamp": [stamp] * docs.height},
                                 schema={"doc_id": pl.Int64, "embedding": pl.Array(pl.Float32, emb.shape[1]),
                                         "stamp": pl.String})
            atomic_write_parquet(frame, side)
        except OSError:
            pass  # read-only location: embeddings stay in memory for this call
    return docs["doc_id"].to_numpy(), emb


def dense_ranking(store: Store, info: CorpusInfo, query: str, k: int, cache: bool) -> pl.DataFrame:
    """The ``k`` documents most similar to ``query`` by MiniLM cosine (search --mode dense)."""
    ids, emb = dense_doc_embeddings(store, info, cache)
    q = get_embedder().embed([query])[0]
    sims = emb @ q
    order = np.argsort(-sims, kind="stable")[:k]
    return pl.DataFrame({"doc_id": ids[order].astype(np.int64), "score": sims[order].astype(np.float64)})
