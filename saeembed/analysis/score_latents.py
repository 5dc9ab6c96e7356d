"""Which latents follow a per-document score: the step shared by axis and facet queries.

An axis query has one score per document (its position between two poles), a facet query one per
category; both keep the latents whose token *shares* correlate most with a score. Computed on the
sparse matrix (never densified), so it scales with the corpus' non-zeros, not documents × latents.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def latent_score_correlations(shares: Any, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson correlation of every latent's column of ``shares`` (sparse [docs, d_sae], CSC is fastest)
    with every column of ``scores`` ([docs] or [docs, m]): (corr [d_sae, m], means [d_sae], stds [d_sae]).
    A latent that never varies correlates 0 with everything."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores.reshape(len(scores), -1)
    m = shares.shape[0]
    mean = np.asarray(shares.mean(axis=0)).ravel()
    var = np.asarray(shares.multiply(shares).mean(axis=0)).ravel() - mean ** 2
    std = np.sqrt(np.maximum(var, 0.0))
    centred = scores - scores.mean(axis=0)
    cov = np.asarray(shares.T @ centred).reshape(shares.shape[1], -1) / m
    score_std = np.maximum(centred.std(axis=0), 1e-12)
    corr = np.where((std > 1e-12)[:, None], cov / (np.maximum(std, 1e-12)[:, None] * score_std[None, :]), 0.0)
    return corr, mean, std


def standardised_projection(shares: Any, feature_ids: np.ndarray, weights: np.ndarray, mean: np.ndarray,
                            std: np.ndarray) -> np.ndarray:
    """``((shares[:, ids] − mean) / std) @ weights`` without densifying: [docs] or [docs, m]."""
    w = weights / std.reshape(-1, *([1] * (weights.ndim - 1)))
    return np.asarray(shares[:, feature_ids] @ w) - mean @ w


__all__ = ["latent_score_correlations", "standardised_projection"]
