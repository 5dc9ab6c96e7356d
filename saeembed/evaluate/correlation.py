"""Correlations: where does correlate rank a pair planted into the corpus?"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from ..analysis import correlate
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
    t0 = time.perf_counter()
    # default support filters (5 documents, 3 together), every latent a candidate (the default keeps
    # the 2,000 most frequent; Y is rare by design), no NPMI cut and no label filter: a full ranking
    pairs = correlate(h.store, name, top_features=int(emb2.shape[1]), min_npmi=-1.0, label_filter=False, top=None)
    elapsed = time.perf_counter() - t0
    hit = pairs.with_row_index("rank", offset=1).filter(
        ((pl.col("feature_a") == x) & (pl.col("feature_b") == y))
        | ((pl.col("feature_a") == y) & (pl.col("feature_b") == x)))
    y_pairs = pairs.filter((pl.col("feature_a") == y) | (pl.col("feature_b") == y)).with_row_index("r", offset=1)
    rank_y = y_pairs.filter((pl.col("feature_a") == x) | (pl.col("feature_b") == x))
    labels = h.store.features().filter(pl.col("feature_id").is_in([x, y]))
    lab = dict(zip(labels["feature_id"].to_list(), labels["label"].to_list()))
    row = {"docs": n, "planted docs": n_plant, "X": f"{x} ({lab.get(x, '')})", "freq X": float(freq[x]),
           "phrase latent Y": f"{y} ({lab.get(y, '')})", "freq Y outside planted": float(out_p[y]),
           "NPMI(X,Y)": float(hit["npmi"][0]) if hit.height else float("nan"),
           "rank among all pairs": int(hit["rank"][0]) if hit.height else None,
           "pairs scored": pairs.height,
           "rank among Y's pairs": int(rank_y["r"][0]) if rank_y.height else None,
           "correlate s": elapsed}
    log(f"correlation: planted pair rank {row['rank among all pairs']} of {pairs.height}")
    return pl.DataFrame([row])
