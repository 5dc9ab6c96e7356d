"""Which of a latent's label rows is shown: the one rule every reader of labels applies.

A latent may carry several rows, one per label source (the shipped offline label, an import, an LLM
label, descriptors) plus a ``context`` row (its strongest context, ``…Sure, <<here>> are…``). Every
source's ``score`` is the label's detection AUC (:mod:`saeembed.labels.score`), so they compare; the
row shown is the best label scoring at least ``LABEL_FLOOR``, else an unscored label (an import not
yet measured), else the context rather than a label measured to name nothing, else the best label
below the floor. Why here, at the bottom of the package: the store's SQL (``StoreReader.features``)
and readers of a shipped ``labels.parquet`` (``SAEEncoder`` feature names, ``export-sae``) must pick
the same row, and the latter sit below the store.
"""

from __future__ import annotations

import polars as pl

# label_source of the offline c-TF-IDF labels (saeembed.labels.offline)
OFFLINE_LABEL_SOURCE = "offline-ctfidf"
# label_source of a latent's strongest context, shown where no label scores at least LABEL_FLOOR;
# the score of every other source is the detection AUC of saeembed.labels.score
CONTEXT_LABEL_SOURCE = "context"
# about the 95th percentile of the null (a latent scored with a random other latent's label)
LABEL_FLOOR = 0.75
# the label of a latent that never fired on the documents its labelling read
DEAD_LABEL = "(dead)"


def naming_labels(rows: pl.DataFrame, contexts: bool = False) -> pl.DataFrame:
    """The rows of ``rows`` whose label names its latent: a label, not a dead latent's marker, and (unless
    ``contexts``) not a context row, which quotes a window and names nothing."""
    keep = pl.col("label").is_not_null() & (pl.col("label") != DEAD_LABEL)
    return rows.filter(keep if contexts else keep & (pl.col("label_source") != CONTEXT_LABEL_SOURCE))


def shown_labels(rows: pl.DataFrame, contexts: bool = True, floor: float = LABEL_FLOOR) -> pl.DataFrame:
    """One row per ``feature_id`` of ``rows`` (feature_id, label, label_source[, score, …]): the row shown,
    by the rule above; ``contexts=False`` leaves context rows out (for label files, which hold labels
    only). Columns and their types are kept; rows come sorted by ``feature_id``."""
    if "score" not in rows.columns:
        rows = rows.with_columns(pl.lit(None, pl.Float64).alias("score"))
    if not contexts:
        rows = rows.filter(pl.col("label_source") != CONTEXT_LABEL_SOURCE)
    tier = (pl.when(pl.col("label_source") == CONTEXT_LABEL_SOURCE).then(2)
            .when(pl.col("score") >= floor).then(0).when(pl.col("score").is_null()).then(1).otherwise(3))
    return (rows.with_columns(tier.alias("_tier"))
            .sort(["feature_id", "_tier", "score", "label_source"], descending=[False, False, True, False],
                  nulls_last=True)
            .unique("feature_id", keep="first", maintain_order=True).drop("_tier"))


__all__ = ["OFFLINE_LABEL_SOURCE", "CONTEXT_LABEL_SOURCE", "LABEL_FLOOR", "DEAD_LABEL", "naming_labels",
           "shown_labels"]
