"""Label quality where users meet labels: the latents ``diff`` reports first.

For each diffing pair of the evaluation, the top latents by frequency difference, and for each of
them the label analyses show and its detection score (:mod:`saeembed.labels.score`), measured on the
target corpus: the share of those latents whose shown label scores at or above the floor (the rest
show their strongest context). Every label is scored on the same windows, so the label sets compare:

- ``before``: a labels file of the same SAE given with ``--labels-before`` (the c-TF-IDF token lists
  the SAE first shipped with: ``git show 0da85d1:saeembed/data/default_sae/labels.parquet``), alone;
- ``shipped``: every label the package ships for the SAE (the c-TF-IDF label, or the readable
  offline label that replaced it where it scored better on the training mix);
- ``shipped + descriptors``: those and the corpus' descriptor labels — what ``labels describe`` and
  ``labels score`` store (measured here without writing to the store).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import polars as pl

from ..labelrule import naming_labels, shown_labels
from ..labels.budget import SCORE_TOKENS
from .diffing import DIFF_PAIRS
from .harness import Harness
from .metrics import log

TOP = 50


def _shown(rows: pl.DataFrame, floor: float) -> pl.DataFrame:
    """Per latent, the label analyses show among ``rows`` (feature_id, label_source, score)."""
    return shown_labels(rows, contexts=False, floor=floor)


def _summary(name: str, shown: pl.DataFrame, top: list[int], floor: float) -> dict[str, Any]:
    """Shares are of all ``top`` latents: a latent without a scored label counts as not reaching the floor."""
    got = shown.filter(pl.col("feature_id").is_in(top))
    scores = got["score"].fill_null(np.nan).to_numpy()
    return {"labels": name, "latents": len(top), "scored": int(np.isfinite(scores).sum()),
            "share at or above floor": float(np.sum(np.nan_to_num(scores, nan=-1) >= floor) / len(top))
            if len(top) else np.nan,
            "median score": float(np.nanmedian(scores)) if np.isfinite(scores).any() else np.nan}


def eval_label_quality(h: Harness, before: pl.DataFrame | None = None,
                       pairs: Sequence[tuple[str, str, str]] = DIFF_PAIRS, max_tokens: int = SCORE_TOKENS
                       ) -> pl.DataFrame:
    """One row per (diff pair, label set): the share of its top-``TOP`` diff latents whose shown label
    scores at or above the floor on the target corpus, and the median score of the shown labels.
    ``before``: another labels file of the same SAE (feature_id, label, label_source), compared as the
    label set ``before``. ``pairs``: (target, other, title) corpora of ``h``. ``max_tokens``: token windows
    read per target corpus."""
    from ..analysis import diff
    from ..analysis.descriptors import descriptor_labels
    from ..labels.measure import corpus_contexts
    from ..labels.score import detection_scores, embed_windows
    from ..sae import open_sae
    from ..store import LABEL_FLOOR as FLOOR
    from ..store.corpusinfo import corpus_info

    def usable(labels: pl.DataFrame) -> pl.DataFrame:
        return naming_labels(labels).filter(pl.col("label") != "")

    shipped = open_sae(h.sae).labels
    if shipped is None:
        raise ValueError(f"the SAE {h.sae!r} ships no labels to evaluate")
    shipped = usable(shipped)
    earlier = None if before is None else usable(before).with_columns(
        ("before:" + pl.col("label_source")).alias("label_source"))
    rows = []
    for a, b, title in pairs:
        h.ensure(a)
        h.ensure(b)
        res = diff(h.store, [h.stored(a), h.stored(b)], top=None, examples=0).filter(
            pl.col("target") == h.stored(a))
        top = res.sort("diff", descending=True)["feature_id"].head(TOP).to_list()
        info = corpus_info(h.store, h.stored(a))
        ctx = corpus_contexts(h.store, info, max_tokens=max_tokens)
        sets = [shipped, usable(descriptor_labels(h.store, info))] + ([earlier] if earlier is not None else [])
        pool = pl.concat([s.filter(pl.col("feature_id").is_in(top)).select("feature_id", "label", "label_source")
                          for s in sets])
        pool = pool.with_columns(pl.Series("score", detection_scores(ctx, embed_windows(ctx), pool, "all"))
                                 .fill_nan(None))
        source = pl.col("label_source")
        named = [("shipped", source.is_in(shipped["label_source"].unique().to_list())),
                 ("shipped + descriptors", ~source.str.starts_with("before:"))]
        if earlier is not None:
            named.insert(0, ("before", source.str.starts_with("before:")))
        for name, which in named:
            rows.append({"comparison": title, **_summary(name, _shown(pool.filter(which), FLOOR), top, FLOOR)})
        log(f"labels {title}: " + "  ".join(f"{r['labels']} {r['share at or above floor']:.2f}"
                                           for r in rows[-len(named):]))
    return pl.DataFrame(rows)


__all__ = ["eval_label_quality", "TOP"]
