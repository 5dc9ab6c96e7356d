"""Query → latents: the label-similarity selection shared by ``cluster`` and ``search``.

The paper ranks latents by the embedding similarity of their labels to a keyphrase and keeps the
top 100 per phrase. We delegate the ranking to :func:`saeembed.labels.search_features` (MiniLM
cosine plus a keyword boost, every label source searched), so ``saeembed features --search`` shows
exactly the latents an analysis will use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from ..errors import UserError
from .options import PER_PHRASE

if TYPE_CHECKING:
    from ..api import Store



def split_phrases(query: str) -> list[str]:
    """Comma-separated keyphrases ("reasoning style, hedging") → ["reasoning style", "hedging"]."""
    phrases = [p.strip() for p in (query or "").split(",") if p.strip()]
    if not phrases:
        raise UserError("the query is empty; pass keyphrases, e.g. --query 'reasoning style, hedging'")
    return phrases


def select_features(store: Store, query: str, sae: str, k: int = PER_PHRASE,
                    alternative: str = "pass --features instead") -> pl.DataFrame:
    """Latents whose labels match any keyphrase of ``query``: the top ``k`` per phrase, united.

    Columns: feature_id, label, phrase (the best-matching phrase), score, rank (0 = best overall,
    by score). Raises a :class:`UserError` when no latent is labelled, since then nothing can match;
    ``alternative`` completes its message with what the caller offers instead.
    """
    from ..labels import search_features

    if k <= 0:
        raise UserError("the number of latents per phrase must be positive")
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


__all__ = ["select_features", "split_phrases", "parse_feature_list", "PER_PHRASE"]
