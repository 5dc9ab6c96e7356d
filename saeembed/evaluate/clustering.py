"""Targeted clustering on Amazon reviews (domain × sentiment) against the ground-truth axes."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ..analysis.cluster import cluster
from ..embed import get_embedder
from .harness import Harness
from .metrics import log
from .steering import assignments_by_row, ground_truth

# ------------------------------------------------------------------------------- clustering ----
CLUSTER_QUERIES = {"sentiment": "sentiment", "product category": "product category"}
SELECTIONS = ("labels", "descriptors")  # labels: the paper's selection (and auto's rule for other queries)
# the document-level SAE has 512 latents, so the default 100 per phrase is a fifth of them; rows at other
# widths (k = 4 only) show whether more selected latents steer, or only approach the unfiltered clustering
DOC_PER_PHRASE = (25, 200, 300)
# the selection rule of --coverage (never fewer than the 100 per phrase) and the handling of documents
# without a selected latent (--unplaced nearest), both SAEs, k = 2 and 4
COVERAGE_ROWS = ((f"coverage {1.0}", {"coverage": 1.0}), (f"coverage {0.99}", {"coverage": 0.99}),
                 ("100 per phrase, unplaced nearest", {"unplaced": "nearest"}))


def eval_clustering(h: Harness, doc: Harness | None = None) -> pl.DataFrame:
    """NMI/ARI of each clustering against domain and sentiment; ``doc`` (a harness on the
    document-level SAE) adds its targeted and unfiltered rows next to the token-level ones."""
    from sklearn.cluster import HDBSCAN, KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


    name = h.ensure("amazon")
    frame = h.frame(name)
    harnesses = [("SAE", h)] + ([("doc SAE", doc)] if doc is not None else [])
    if doc is not None:
        doc.ensure(name)
    placed = np.flatnonzero(h.doc_ids(name) >= 0)
    labels = ground_truth(h, name)
    rows: list[dict[str, Any]] = []

    def score(method: str, k: int | None, assign: dict[int, int]) -> None:
        """``assign``: frame row → cluster; rows it lacks form one extra group (−1)."""
        idx = placed
        pred = np.array([assign.get(int(r), -1) for r in idx])
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

    def by_row(x: Harness, result: pl.DataFrame) -> dict[int, int]:
        return assignments_by_row(x, name, result)

    emb = get_embedder().embed(frame["text"].to_list())
    for k in (2, 4):
        for prefix, x in harnesses:
            for select in SELECTIONS:
                for q in CLUSTER_QUERIES:
                    score(f'{prefix} targeted ({select}), query "{q}"', k,
                          by_row(x, cluster(x.store, x.stored(name), query=q, k=k, select=select)))
            for q in CLUSTER_QUERIES:  # the default: "sentiment" is an axis query, "product category" facets
                score(f'{prefix} targeted (auto), query "{q}"', k,
                      by_row(x, cluster(x.store, x.stored(name), query=q, k=k)))
            score(f"{prefix} unfiltered (all latents)", k,
                  by_row(x, cluster(x.store, x.stored(name), unfiltered=True, k=k)))
            for tag, extra in COVERAGE_ROWS:
                for select in SELECTIONS:
                    for q in CLUSTER_QUERIES:
                        score(f'{prefix} targeted ({select}, {tag}), query "{q}"', k,
                              by_row(x, cluster(x.store, x.stored(name), query=q, k=k, select=select, **extra)))
        if doc is not None and k == 4:
            for per_phrase in DOC_PER_PHRASE:
                for select in SELECTIONS:
                    for q in CLUSTER_QUERIES:
                        score(f'doc SAE targeted ({select}, {per_phrase} per phrase), query "{q}"', k,
                              by_row(doc, cluster(doc.store, doc.stored(name), query=q, k=k, select=select,
                                                  per_phrase=per_phrase)))
        km = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(emb)
        score("dense MiniLM + k-means", k, {int(i): int(km[i]) for i in placed})
    hd = HDBSCAN(min_cluster_size=20).fit_predict(emb)
    score("dense MiniLM + HDBSCAN", None, {int(i): int(hd[i]) for i in placed})
    return pl.DataFrame(rows)
