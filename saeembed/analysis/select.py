"""Query → latents: the selection shared by ``cluster`` and ``search``.

Two ways to match a keyphrase to latents (``select``):

- ``labels`` (the paper): rank latents by the embedding similarity of their labels to the phrase
  and keep the top 100 per phrase, delegated to :func:`saeembed.labels.search_features` (MiniLM
  cosine plus a keyword boost, every label source searched), so ``saeembed features --search``
  shows exactly the latents an analysis will use. With the offline c-TF-IDF labels this matches
  the *words* a latent fires on: "sentiment" finds the latents of "positive, negative".
- ``descriptors``: rank latents by the cosine between the phrase and the latent's corpus
  descriptor — the mean MiniLM embedding of the documents it fires on most, minus the corpus mean
  (:mod:`saeembed.analysis.descriptors`) — so the phrase is matched to what the latent's documents
  are about, in the corpus being analysed. No labels are needed.
- ``auto`` (default): descriptors when the corpus is large enough for them (``AUTO_MIN_DOCS``),
  labels otherwise.

Several comma-separated keyphrases select the union of their top latents (best score kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ..errors import UserError
from .options import PER_PHRASE

if TYPE_CHECKING:
    from ..api import Store

SELECT_METHODS = ("auto", "labels", "descriptors")
AUTO_MIN_DOCS = 50  # below this many documents a latent's top documents are too few to describe it


def split_phrases(query: str) -> list[str]:
    """Comma-separated keyphrases ("reasoning style, hedging") → ["reasoning style", "hedging"]."""
    phrases = [p.strip() for p in (query or "").split(",") if p.strip()]
    if not phrases:
        raise UserError("the query is empty; pass keyphrases, e.g. --query 'reasoning style, hedging'")
    return phrases


def resolve_method(method: str, info: Any | None) -> str:
    """``auto`` → ``descriptors`` for a corpus of at least ``AUTO_MIN_DOCS`` documents, else ``labels``."""
    if method not in SELECT_METHODS:
        raise UserError(f"unknown selection {method!r}; use one of {', '.join(SELECT_METHODS)}")
    if method == "auto":
        return "descriptors" if info is not None and int(info["n_docs"]) >= AUTO_MIN_DOCS else "labels"
    if method == "descriptors" and info is None:
        raise UserError("descriptor selection needs a corpus")
    return method


def select_features(store: Store, query: str, sae: str, k: int = PER_PHRASE,
                    alternative: str = "pass --features instead", method: str = "labels",
                    info: Any | None = None) -> pl.DataFrame:
    """Latents matching any keyphrase of ``query``: the top ``k`` per phrase, united.

    ``method``: ``labels``, ``descriptors`` (needs ``info``, the corpus) or ``auto`` (see the module
    docstring). Columns: feature_id, label, phrase (the best-matching phrase), score, rank (0 = best
    overall, by score). With labels, raises a :class:`UserError` when no latent is labelled, since
    then nothing can match; ``alternative`` completes its message with what the caller offers instead.
    """
    if k <= 0:
        raise UserError("the number of latents per phrase must be positive")
    if resolve_method(method, info) == "descriptors":
        return _select_by_descriptors(store, query, info, k)
    from ..labels import search_features

    parts = []
    for phrase in split_phrases(query):
        hits = search_features(store, phrase, k=k, sae=sae)
        parts.append(hits.select(pl.col("feature_id").cast(pl.Int32), "label", "score")
                     .with_columns(pl.lit(phrase).alias("phrase")))
    res = pl.concat(parts) if parts else pl.DataFrame()
    if res.height == 0:
        raise UserError(f"no latent of SAE {sae!r} can match {query!r}: it has no labels in this store; import or "
                        f"generate labels (saeembed labels import FILE, saeembed label CORPUS), or {alternative}")
    res = (res.sort("score", descending=True).unique("feature_id", keep="first", maintain_order=True)
           .with_columns(pl.int_range(0, pl.len()).alias("rank")))
    return res.select("feature_id", "label", "phrase", "score", "rank")


def _select_by_descriptors(store: Store, query: str, info: Any, k: int) -> pl.DataFrame:
    """The top ``k`` latents per phrase by descriptor cosine, united (best score kept)."""
    from ..embed import get_embedder
    from .common import feature_labels
    from .descriptors import corpus_descriptors

    desc = corpus_descriptors(store, info)
    if len(desc.feature_ids) == 0:
        raise UserError(f"no latent fires in enough documents of {info['name']!r} to describe it; use --select labels")
    phrases = split_phrases(query)
    qs = get_embedder().embed(phrases)
    parts = []
    for phrase, q in zip(phrases, qs):
        sims = desc.similarity(q)
        best = np.argsort(-sims, kind="stable")[:k]
        parts.append(pl.DataFrame({"feature_id": desc.feature_ids[best].astype(np.int32), "score": sims[best],
                                   "phrase": [phrase] * len(best)}))
    res = (pl.concat(parts).sort(["score", "feature_id"], descending=[True, False])
           .unique("feature_id", keep="first", maintain_order=True)
           .with_columns(pl.int_range(0, pl.len()).alias("rank")))
    labels = feature_labels(store, info["sae"], res["feature_id"].to_list())
    res = res.join(labels.with_columns(pl.col("feature_id").cast(pl.Int32)), on="feature_id", how="left")
    return res.sort("rank").select("feature_id", "label", "phrase", "score", "rank")


def parse_feature_list(text: str, d_sae: int | None) -> list[int]:
    """"1,2,3" → [1, 2, 3], checked against the SAE's width."""
    try:
        feats = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UserError(f"--features must be comma-separated integers, not {text!r}") from None
    if not feats:
        raise UserError("--features is empty; pass latent ids like 12,845,3301")
    bad = [f for f in feats if f < 0 or (d_sae is not None and f >= d_sae)]
    if bad:
        raise UserError(f"latent {bad[0]} is outside 0..{(d_sae or 1) - 1}; check --features")
    return list(dict.fromkeys(feats))


__all__ = ["select_features", "split_phrases", "parse_feature_list", "resolve_method", "PER_PHRASE", "SELECT_METHODS",
           "AUTO_MIN_DOCS"]
