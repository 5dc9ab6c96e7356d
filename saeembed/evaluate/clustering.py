"""Targeted clustering on Amazon reviews (domain × sentiment) against the ground-truth axes."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from .harness import Harness
from .metrics import log

# ------------------------------------------------------------------------------- clustering ----
CLUSTER_QUERIES = {"sentiment": "sentiment", "product category": "product category"}
SELECTIONS = ("labels", "descriptors")  # labels: the state before issue 9; descriptors: the default (auto)


def eval_clustering(h: Harness) -> pl.DataFrame:
    from sklearn.cluster import HDBSCAN, KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from ..analysis.cluster import cluster, cluster_assignments
    from ..embed import get_embedder

    name = h.ensure("amazon")
    frame = h.frame(name)
    ids = h.doc_ids(name)
    by_id = {int(d): i for i, d in enumerate(ids) if d >= 0}
    labels = {"sentiment": frame["sentiment"].to_numpy(), "domain": frame["domain"].to_numpy()}
    rows: list[dict[str, Any]] = []

    def score(method: str, k: int | None, assign: dict[int, int]) -> None:
        idx = np.array(list(by_id.values()))
        pred = np.array([assign.get(d, -1) for d in by_id])  # unplaced docs form one extra group
        row: dict[str, Any] = {"method": method, "k": k if k is not None else len(set(pred) - {-1})}
        for axis, y in labels.items():
            row[f"NMI {axis}"] = normalized_mutual_info_score(y[idx], pred)
            row[f"ARI {axis}"] = adjusted_rand_score(y[idx], pred)
        # the same clustering scored on the even rows (where settings were chosen) and the odd rows
        for part, parity in (("dev", 0), ("held-out", 1)):
            m = (idx % 2) == parity
            for axis, y in labels.items():
                row[f"NMI {axis} {part}"] = normalized_mutual_info_score(y[idx][m], pred[m])
        rows.append(row)
        log(f"clustering {method} k={row['k']}: " + "  ".join(f"{c} {row[c]:.3f}" for c in row if c.startswith("NMI")))

    for k in (2, 4):
        for select in SELECTIONS:
            for q in CLUSTER_QUERIES:
                d = cluster_assignments(cluster(h.store, name, query=q, k=k, select=select))
                score(f'SAE targeted ({select}), query "{q}"', k,
                      dict(zip(d["doc_id"].to_list(), d["cluster"].to_list())))
        d = cluster_assignments(cluster(h.store, name, unfiltered=True, k=k))
        score("SAE unfiltered (all latents)", k, dict(zip(d["doc_id"].to_list(), d["cluster"].to_list())))
        emb = get_embedder().embed(frame["text"].to_list())
        km = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(emb)
        score("dense MiniLM + k-means", k, {int(ids[i]): int(c) for i, c in enumerate(km) if ids[i] >= 0})
    hd = HDBSCAN(min_cluster_size=20).fit_predict(emb)
    score("dense MiniLM + HDBSCAN", None, {int(ids[i]): int(c) for i, c in enumerate(hd) if ids[i] >= 0})
    return pl.DataFrame(rows)
