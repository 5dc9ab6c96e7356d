"""Correlations: where does correlate rank a pair planted into the corpus, and how many pairs does
document length alone make "significant"?"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from ..analysis import correlate
from ..analysis.options import CONTROLS
from .harness import Harness
from .metrics import log

# ------------------------------------------------------------------------------- correlations --
PLANT_PHRASE = " By the way, my grandmother knits purple scarves for penguins."
PLANT_SHARE = 0.02


def eval_correlation(h: Harness) -> pl.DataFrame:
    """Plant a phrase in 2 % of the documents that have latent X; where does correlate rank (X, phrase)?"""
    base = h.ensure("goemotions")
    frame = h.frame(base)
    emb, ids = h.store.embeddings(base)
    binm = (emb > 0).tocsc()
    n = binm.shape[0]
    freq = np.asarray(binm.sum(axis=0)).ravel() / n
    rng = np.random.default_rng(0)
    n_plant = max(5, int(round(PLANT_SHARE * n)))
    # concept X: a latent in 10–30 % of documents, so 2 % of the corpus fits inside it
    xs = np.flatnonzero((freq > 0.10) & (freq < 0.30))
    x = int(rng.choice(xs))
    with_x = ids[binm[:, x].nonzero()[0]]
    chosen = set(rng.choice(with_x, n_plant, replace=False).tolist())
    rows_chosen = sorted(int(d) & 0xFFFFFFFF for d in chosen)
    planted = frame.with_row_index("_r").with_columns(
        pl.when(pl.col("_r").is_in(rows_chosen)).then(pl.col("text") + PLANT_PHRASE).otherwise(pl.col("text"))
        .alias("text")).drop("_r")
    name = h.ensure("goemotions_planted", planted)
    emb2, ids2 = h.store.embeddings(name)
    bin2 = (emb2 > 0).tocsc()
    is_planted = np.isin(ids2 & 0xFFFFFFFF, rows_chosen)
    # the phrase latent Y: present in most planted documents, rarest elsewhere
    in_p = np.asarray(bin2[is_planted].sum(axis=0)).ravel() / is_planted.sum()
    out_p = np.asarray(bin2[~is_planted].sum(axis=0)).ravel() / max((~is_planted).sum(), 1)
    cand = np.flatnonzero(in_p >= 0.8)
    y = int(cand[np.argmin(out_p[cand])])
    labels = h.store.features().filter(pl.col("feature_id").is_in([x, y]))
    lab = dict(zip(labels["feature_id"].to_list(), labels["label"].to_list()))
    null = length_null(h, base)
    amazon = length_null(h, h.ensure("amazon"))
    rows = []
    for control in CONTROLS:
        t0 = time.perf_counter()
        # default support filters (5 documents, 3 together), every latent a candidate (the default keeps
        # the 2,000 most frequent; Y is rare by design), no NPMI cut, no label filter and no peak check:
        # a full ranking
        pairs = correlate(h.store, name, top_features=int(emb2.shape[1]), min_npmi=-1.0, label_filter=False,
                          peak_check=False, top=None, control=control)
        elapsed = time.perf_counter() - t0
        hit = pairs.with_row_index("rank", offset=1).filter(
            ((pl.col("feature_a") == x) & (pl.col("feature_b") == y))
            | ((pl.col("feature_a") == y) & (pl.col("feature_b") == x)))
        y_pairs = pairs.filter((pl.col("feature_a") == y) | (pl.col("feature_b") == y)).with_row_index("r", offset=1)
        rank_y = y_pairs.filter((pl.col("feature_a") == x) | (pl.col("feature_b") == x))
        rows.append({"control": control, "docs": n, "planted docs": n_plant, "X": f"{x} ({lab.get(x, '')})",
                     "freq X": float(freq[x]), "phrase latent Y": f"{y} ({lab.get(y, '')})",
                     "freq Y outside planted": float(out_p[y]),
                     "NPMI(X,Y)": float(hit["npmi"][0]) if hit.height else float("nan"),
                     "q(X,Y)": float(hit["q_value"][0]) if hit.height else float("nan"),
                     "rank among all pairs": int(hit["rank"][0]) if hit.height else None,
                     "pairs scored": pairs.height,
                     "rank among Y's pairs": int(rank_y["r"][0]) if rank_y.height else None,
                     "length-null pairs q<0.05": null[control][0], "real pairs q<0.05": null[control][1],
                     "Amazon length-null pairs q<0.05": amazon[control][0],
                     "Amazon real pairs q<0.05": amazon[control][1],
                     "correlate s": elapsed})
        log(f"correlation ({control}): planted pair rank {rows[-1]['rank among all pairs']} of {pairs.height}; "
            f"length null {null[control][0]} significant pairs")
    return pl.DataFrame(rows)


NULL_LATENTS = 2000  # correlate's default: its most frequent latents


def length_null(h: Harness, corpus: str, seed: int = 0) -> dict[str, tuple[int, int]]:
    """Per control: (pairs with q < 0.05 when every latent's presence is shuffled among documents of the
    same length stratum, pairs with q < 0.05 on the real presence). The shuffle keeps how each latent
    grows with length and destroys every real association, so any pair it leaves significant is one
    that length alone produced: the truth is zero."""
    from scipy import sparse

    from ..analysis.common import binary_matrix, lengths_of_rows
    from ..analysis.correlate import candidate_latents, cooccurrence_pairs, length_cells
    from ..analysis.pair_length import bh_over
    from ..store.corpusinfo import corpus_info

    info = corpus_info(h.store, corpus)
    feats = candidate_latents(h.store, info, 0.0, 5, NULL_LATENTS)
    x, rows = binary_matrix(h.store, info, feats.tolist(), 0.0, fmt="csr")
    lengths = lengths_of_rows(h.store, info, rows)
    strata = lengths[0]
    rng = np.random.default_rng(seed)
    shuffled = x.toarray()
    for s in np.unique(strata):
        at = np.flatnonzero(strata == s)
        for f in range(shuffled.shape[1]):
            shuffled[at, f] = shuffled[rng.permutation(at), f]
    m = x.shape[1] * (x.shape[1] - 1) // 2

    def significant(mat, control: str) -> int:
        cells = length_cells(control, lengths, mat)
        i, j, c, _ = cooccurrence_pairs(mat, min_cooccur=3, cells=cells)
        return int((bh_over(cells.p_values(i, j, c), m) < 0.05).sum())

    null = sparse.csr_matrix(shuffled)
    return {control: (significant(null, control), significant(x, control)) for control in CONTROLS}
