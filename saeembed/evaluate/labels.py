"""Label quality where users meet labels: the latents ``diff`` reports first.

For each diffing pair of the evaluation, the top latents by frequency difference, and for each of
them the label analyses show: its detection score (:mod:`saeembed.labels.score`) and whether it is
at or above the floor (else the latent shows its strongest context). Three states of the store's
labels are compared on the same latents:

- ``c-TF-IDF``: the shipped token-list label alone (the labels before scoring existed);
- ``shipped best``: the best-scoring shipped label (c-TF-IDF or a readable offline candidate);
- ``scored on corpus``: every shipped label and the target corpus' descriptor labels scored on that
  corpus — what ``labels describe`` and ``labels score`` store (measured here without writing).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from .diffing import DIFF_PAIRS
from .harness import Harness
from .metrics import log

TOP = 50


def _shown(rows: pl.DataFrame, floor: float) -> pl.DataFrame:
    """Per latent, the label analyses show among ``rows`` (feature_id, label_source, score)."""
    ranked = rows.with_columns(pl.when(pl.col("score") >= floor).then(0).when(pl.col("score").is_null()).then(1)
                               .otherwise(2).alias("tier"))
    return (ranked.sort(["feature_id", "tier", "score"], descending=[False, False, True], nulls_last=True)
            .unique("feature_id", keep="first", maintain_order=True))


def _summary(name: str, shown: pl.DataFrame, top: list[int], floor: float) -> dict[str, Any]:
    got = shown.filter(pl.col("feature_id").is_in(top))
    scores = got["score"].fill_null(np.nan).to_numpy()
    return {"labels": name, "latents": len(top), "scored": int(np.isfinite(scores).sum()),
            "share at or above floor": float(np.mean(np.nan_to_num(scores, nan=-1) >= floor)) if len(top) else np.nan,
            "median score": float(np.nanmedian(scores)) if np.isfinite(scores).any() else np.nan}


def eval_label_quality(h: Harness) -> pl.DataFrame:
    """One row per (diff pair, label state): the share of its top-``TOP`` diff latents whose shown label
    scores at or above the floor, and the median score of the shown labels."""
    from ..analysis import diff
    from ..analysis.common import corpus_info
    from ..analysis.descriptors import descriptor_labels
    from ..labels import labels_of
    from ..labels.measure import corpus_contexts
    from ..labels.score import detection_scores, embed_windows
    from ..store import CONTEXT_LABEL_SOURCE, OFFLINE_LABEL_SOURCE
    from ..store import LABEL_FLOOR as FLOOR

    rows = []
    for a, b, title in DIFF_PAIRS:
        h.ensure(a)
        h.ensure(b)
        res = diff(h.store, [a, b], top=None, examples=0).filter(pl.col("target") == a)
        top = res.sort("diff", descending=True)["feature_id"].head(TOP).to_list()
        info = corpus_info(h.store, a)
        shipped = labels_of(h.store, info["sae"]).filter(pl.col("label_source") != CONTEXT_LABEL_SOURCE)
        ctfidf = shipped.filter(pl.col("label_source") == OFFLINE_LABEL_SOURCE)
        offline = shipped.filter(pl.col("label_source").str.starts_with("offline-"))
        rows.append({"comparison": title, **_summary("c-TF-IDF", _shown(ctfidf, FLOOR), top, FLOOR)})
        rows.append({"comparison": title, **_summary("shipped best", _shown(offline, FLOOR), top, FLOOR)})
        # what `labels describe A` and `labels score A` store, measured without writing to the store
        ctx = corpus_contexts(h.store, info)
        pool = pl.concat([shipped.select("feature_id", "label", "label_source"),
                          descriptor_labels(h.store, info).filter(pl.col("label") != "").select(
                              "feature_id", "label", "label_source")])
        pool = pool.with_columns(pl.Series("score", detection_scores(ctx, embed_windows(ctx), pool, "all"))
                                 .fill_nan(None))
        rows.append({"comparison": title, **_summary("scored on corpus", _shown(pool, FLOOR), top, FLOOR)})
        log(f"labels {title}: " + "  ".join(f"{r['labels']} {r['share at or above floor']:.2f}" for r in rows[-3:]))
    return pl.DataFrame(rows)


__all__ = ["eval_label_quality", "TOP"]
