"""The one measure of label quality: detection AUC.

    score = P( cos(e(label), e(strong window)) > cos(e(label), e(non-activating window)) )

with ``e`` the MiniLM embedding (:mod:`saeembed.embed`). The strong windows are held-out windows
where the latent fires in the top fifth of its activations (``STRONG``), from documents that neither
wrote nor chose the label (the held-out halves of :mod:`.contexts`); the non-activating windows are
random positions where it does not fire. It is the area under the ROC curve of the label used as a
detector of its latent: 0.5 is chance, 1.0 means every strong window is closer to the label than
every other window. No LLM is asked, so every label source — shipped offline labels, descriptors,
imported files, LLM labels — is scored the same way, on the same windows, and the scores compare
across sources. Analyses show the best-scoring label of a latent, and none below :data:`FLOOR`
(they show the latent's strongest context instead).

Why strong firings: a TopK latent's weakest firings are mostly noise (the k-th best latent of a
token), which no label describes; labels name what a latent fires on clearly. Why this measure:
users find latents by matching their words to labels (``features --search``, label selection),
which is exactly a MiniLM similarity between words and label. Why the floor is 0.75: it is the 95th
percentile of the null, a latent scored with the label of a random other latent (measured on the
default SAE, see its RECIPE.md), so a label at or above it is unlikely to be right by chance.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import polars as pl

from ..embed import get_embedder
from ..memo import Memo
from ..store import LABEL_FLOOR
from .contexts import Contexts
from .search import label_text_vectors

FLOOR = LABEL_FLOOR  # a label scoring below this is not shown (see the README for the distribution)
MIN_POSITIVES = 3  # fewer held-out activating windows leave a latent unscored (score null)

_WINDOWS: Memo[np.ndarray] = Memo("window embeddings", max_entries=4)


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """MiniLM embeddings of ``texts`` (duplicates embedded once), memoised for the process."""
    texts = list(texts)
    digest = hashlib.sha1("\x00".join(texts).encode()).hexdigest()

    def build() -> np.ndarray:
        uniq, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
        if len(uniq) == 0:
            return np.zeros((0, 384), np.float32)
        return get_embedder().embed([str(t) for t in uniq], batch_size=128)[inverse]

    return _WINDOWS.get_or_build(digest, build)


class WindowEmbeddings:
    """MiniLM embeddings of the windows of some rows of a :class:`Contexts`, embedded together once."""

    def __init__(self, ctx: Contexts, rows: np.ndarray) -> None:
        self.rows = np.unique(np.asarray(rows, np.int64))
        self.vectors = embed_texts([ctx.window(int(r)) for r in self.rows])

    @classmethod
    def from_arrays(cls, rows: np.ndarray, vectors: np.ndarray) -> WindowEmbeddings:
        """Embeddings kept from an earlier run (``rows`` sorted)."""
        out = cls.__new__(cls)
        out.rows, out.vectors = np.asarray(rows, np.int64), np.asarray(vectors, np.float32)
        return out

    def of(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[np.searchsorted(self.rows, np.asarray(rows, np.int64))]


def embed_windows(ctx: Contexts, explain: bool = False) -> WindowEmbeddings:
    """One embedding pass over the bank (held-out positives and negatives) and, with ``explain``, the
    latents' explain windows (which the ``words`` candidates are written from)."""
    parts = [ctx.bank] + (list(ctx.explain.values()) if explain else [])
    return WindowEmbeddings(ctx, np.concatenate(parts))


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann–Whitney AUC of ``pos`` over ``neg`` (ties count half)."""
    neg = np.sort(neg)
    below = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * equal).sum() / (len(pos) * len(neg)))


STRONG = 0.8  # positives: firings at or above this quantile of the latent's non-zero activations


def detection_scores(ctx: Contexts, windows: WindowEmbeddings, labels: pl.DataFrame, half: str = "score"
                     ) -> np.ndarray:
    """Detection AUC of every row of ``labels`` (``feature_id``, ``label``) on the ``half`` ("score",
    "select" or "all") of its latent's held-out windows where it fires strongly (at or above its
    ``STRONG`` quantile); NaN where fewer than ``MIN_POSITIVES`` such windows exist."""
    out = np.full(labels.height, np.nan)
    if labels.height == 0:
        return out
    fids = labels["feature_id"].to_numpy()
    # latent → (its strong held-out windows, the negatives where it does not fire), once per latent
    positives: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for f in np.unique(fids):
        rows, vals = ctx.heldout(int(f), half)
        firing, all_vals = ctx.codes.firing(int(f))
        rows = rows[vals >= np.quantile(all_vals, STRONG)] if len(all_vals) else rows
        if len(rows) >= MIN_POSITIVES:
            positives[int(f)] = rows, ~np.isin(ctx.negatives, firing)
    scorable = np.flatnonzero(np.isin(fids, list(positives)))
    if len(scorable) == 0:
        return out
    # only the labels of latents with enough strong windows are embedded: most of a large label set
    # may not fire in the sample read
    texts = labels["label"].cast(pl.String).fill_null("").to_list()
    lab = label_text_vectors([texts[i] for i in scorable])
    neg_sims = windows.of(ctx.negatives) @ lab.T  # [n_negatives, n_scorable]
    for j, i in enumerate(scorable):
        rows, keep = positives[int(fids[i])]
        out[i] = auc(windows.of(rows) @ lab[j], neg_sims[keep, j])
    return out


def best_per_latent(scored: pl.DataFrame) -> pl.DataFrame:
    """The candidate with the highest ``select`` AUC per latent (ties: the order given)."""
    return (scored.with_row_index("_order").sort(["feature_id", "select", "_order"], descending=[False, True, False],
                                                 nulls_last=True)
            .unique("feature_id", keep="first", maintain_order=True).drop("_order"))


def describe(scores: Any) -> dict[str, float]:
    """Count, share above the floor and quartiles of a score column (NaN/null = unscored)."""
    s = np.asarray(pl.Series(scores, dtype=pl.Float64).drop_nulls().drop_nans().to_numpy())
    if len(s) == 0:
        return {"n": 0}
    q = np.quantile(s, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {"n": len(s), "above_floor": float((s >= FLOOR).mean()), "mean": float(s.mean()),
            **{f"p{int(p * 100)}": float(v) for p, v in zip((0.1, 0.25, 0.5, 0.75, 0.9), q)}}


__all__ = ["FLOOR", "MIN_POSITIVES", "STRONG", "auc", "detection_scores", "embed_windows", "WindowEmbeddings",
           "best_per_latent", "describe", "embed_texts"]
