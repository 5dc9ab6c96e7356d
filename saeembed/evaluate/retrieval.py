"""Property retrieval: SAE search (label or descriptor selection), dense MiniLM, hybrid, random."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import polars as pl

from .harness import Harness
from .metrics import average_precision, log, precision_at
from .tasks import RetrievalTask

# ------------------------------------------------------------------------------- retrieval -----
RANDOM_DRAWS = 50


def full_ranking(ranked: list[int], all_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The returned ranking, then every document it did not return in random order (ties at the bottom)."""
    seen = set(ranked)
    rest = np.array([d for d in all_ids if d not in seen], dtype=np.int64)
    return np.concatenate([np.asarray(ranked, dtype=np.int64), rng.permutation(rest)])


def eval_retrieval(h: Harness, tasks: list[RetrievalTask]) -> pl.DataFrame:
    from ..analysis import search

    rows = []
    for task in tasks:
        h.ensure(task.corpus)
        frame = h.frame(task.corpus)
        ids = h.doc_ids(task.corpus)
        truth = frame.select(task.positive.cast(pl.Boolean).fill_null(False)).to_series().to_numpy()
        valid = ids >= 0
        relevant = dict(zip(ids[valid].tolist(), truth[valid].tolist()))
        all_ids = ids[valid]
        row: dict[str, Any] = {"task": task.name, "query": task.query, "docs": int(valid.sum()),
                               "positives": int(truth[valid].sum())}
        for mode in ("sae", "dense", "hybrid"):
            t0 = time.perf_counter()
            res = search(h.store, task.corpus, task.query, k=len(all_ids), mode=mode)
            row[f"{mode}_s"] = time.perf_counter() - t0
            order = full_ranking(res["doc_id"].to_list(), all_ids, np.random.default_rng(0))
            rel = np.array([relevant[int(d)] for d in order])
            row[f"{mode}_map"], row[f"{mode}_p50"] = average_precision(rel), precision_at(rel, 50)
        rng = np.random.default_rng(0)
        draws = [np.array([relevant[int(d)] for d in rng.permutation(all_ids)]) for _ in range(RANDOM_DRAWS)]
        row["random_map"] = float(np.mean([average_precision(r) for r in draws]))
        row["random_p50"] = float(np.mean([precision_at(r, 50) for r in draws]))
        rows.append(row)
        log(f"retrieval {task.name}: " + "  ".join(f"{m} MAP {row[f'{m}_map']:.3f}" for m in
                                                   ("sae", "dense", "hybrid", "random")))
    return pl.DataFrame(rows)


def retrieval_table(df: pl.DataFrame) -> pl.DataFrame:
    body = df.select("task", "positives", "docs", *[f"{m}_{x}" for x in ("map", "p50")
                                                      for m in ("sae", "dense", "hybrid", "random")])
    mean = body.select(pl.lit("**mean**").alias("task"), pl.lit(None, pl.Int64).alias("positives"),
                       pl.lit(None, pl.Int64).alias("docs"),
                       *[pl.col(c).mean() for c in body.columns[3:]])
    out = pl.concat([body, mean.cast(body.schema)])
    return out.rename({c: c.replace("_map", " MAP").replace("_p50", " P@50") for c in out.columns})
