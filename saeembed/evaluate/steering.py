"""Steering beyond Amazon: does a query's clustering follow the property it names on other corpora?

The Amazon table (:mod:`.clustering`) is where the selection rules were developed; these corpora check
that they carry over, and what they cost: a query about a property the corpus hardly varies in must
not pull the clustering towards it at the expense of what the corpus is about — or, when it does,
the table shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from .harness import Harness
from .metrics import log


@dataclass(frozen=True)
class SteeringCase:
    """``query`` on ``corpus``, scored against every ground-truth column in ``truths``."""

    corpus: str
    query: str
    truths: tuple[str, ...]
    why: str


STEERING_CASES = (
    SteeringCase("ag_news", "news category", ("news category",), "categorical query on a topical corpus"),
    SteeringCase("ag_news", "topic", ("news category",), "one-word categorical query"),
    SteeringCase("goemotions", "emotion", ("sentiment group",), "categorical query on an affective corpus"),
    SteeringCase("goemotions", "sentiment", ("sentiment group",), "axis query on another corpus than Amazon"),
    SteeringCase("amazon", "emotion", ("sentiment", "domain"), "cost: a property the corpus varies little in"),
)
METHODS = ("auto", "labels", "unfiltered")
SINGLE_GROUP = ("positive", "negative", "ambiguous", "neutral")


def ground_truth(h: Harness, corpus: str) -> dict[str, np.ndarray]:
    """Column name → label per frame row (None where a row has no single label)."""
    frame = h.frame(corpus)
    if corpus == "ag_news":
        return {"news category": frame["label"].to_numpy()}
    if corpus == "amazon":
        return {"sentiment": frame["sentiment"].to_numpy(), "domain": frame["domain"].to_numpy()}
    if corpus == "goemotions":
        # GoEmotions' own grouping of its 27 emotions; comments annotated with two groups are left out
        source = pl.read_parquet(h.data / "goemotions" / "data.parquet", columns=["id", "sentiment_group"])
        group = frame.select("id").join(source, on="id", how="left")["sentiment_group"].to_list()
        return {"sentiment group": np.array([g[0] if g and len(g) == 1 and g[0] in SINGLE_GROUP else None
                                             for g in group], dtype=object)}
    raise ValueError(f"no ground truth for {corpus}")


def assignments_by_row(x: Harness, corpus: str, result: pl.DataFrame) -> dict[int, int]:
    """Frame row → cluster of a :func:`~saeembed.analysis.cluster.cluster` result."""
    from ..analysis.cluster import cluster_assignments

    row_of = {int(d): i for i, d in enumerate(x.doc_ids(corpus)) if d >= 0}
    d = cluster_assignments(result)
    return {row_of[int(i)]: int(c) for i, c in zip(d["doc_id"].to_list(), d["cluster"].to_list())}


def eval_steering(h: Harness, doc: Harness | None = None) -> pl.DataFrame:
    """NMI of each case's clustering (k = 2 and 4) with its ground truth, on the even rows (dev), the odd
    rows (held-out) and all rows; rows of the frame a clustering did not place form one extra group."""
    from sklearn.metrics import normalized_mutual_info_score

    from ..analysis.cluster import cluster

    harnesses = [("SAE", h)] + ([("doc SAE", doc)] if doc is not None else [])
    rows: list[dict[str, Any]] = []
    for case in STEERING_CASES:
        for _, x in harnesses:
            x.ensure(case.corpus)
        truth = ground_truth(h, case.corpus)
        placed = np.flatnonzero(h.doc_ids(case.corpus) >= 0)
        for k in (2, 4):
            for prefix, x in harnesses:
                for method in METHODS:
                    opts: dict[str, Any] = ({"unfiltered": True} if method == "unfiltered" else
                                            {"query": case.query} | ({} if method == "auto" else {"select": method}))
                    result = cluster(x.store, x.stored(case.corpus), k=k, **opts)
                    assign = assignments_by_row(x, case.corpus, result)
                    pred = np.array([assign.get(int(r), -1) for r in placed])
                    chosen = str(result["selection"][0]) if method != "unfiltered" else "unfiltered"
                    for column, y in truth.items():
                        labelled = np.array([y[r] is not None for r in placed])
                        row: dict[str, Any] = {"corpus": case.corpus, "query": case.query, "SAE": prefix,
                                               "method": method if method != "auto" else f"auto → {chosen}",
                                               "k": k, "truth": column}
                        for part, keep in (("dev", placed % 2 == 0), ("held-out", placed % 2 == 1),
                                           ("all", np.ones(len(placed), bool))):
                            m = keep & labelled
                            row[f"NMI {part}"] = normalized_mutual_info_score(y[placed][m].astype(str), pred[m])
                        rows.append(row)
                        log(f"steering {case.corpus} {case.query!r} {prefix} {row['method']} k={k} {column}: "
                            f"dev {row['NMI dev']:.3f} held-out {row['NMI held-out']:.3f}")
    return pl.DataFrame(rows)
