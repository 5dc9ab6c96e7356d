"""Property retrieval: SAE search (label or descriptor selection), dense MiniLM, hybrid, random."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import polars as pl

from ..analysis import search
from .harness import Harness
from .metrics import average_precision, log, precision_at
from .tasks import RetrievalTask, task_halves

# ------------------------------------------------------------------------------- retrieval -----
RANDOM_DRAWS = 50


def full_ranking(ranked: list[int], all_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The returned ranking, then every document it did not return in random order (ties at the bottom)."""
    seen = set(ranked)
    rest = np.array([d for d in all_ids if d not in seen], dtype=np.int64)
    return np.concatenate([np.asarray(ranked, dtype=np.int64), rng.permutation(rest)])


# (column, search mode, latent selection): "sae-labels" is the paper's label-similarity selection
# with the shipped offline labels (the paper's selection), "sae" the default (auto → descriptors).
METHODS = (("sae-labels", "sae", "labels"), ("sae", "sae", "auto"), ("dense", "dense", "auto"),
           ("hybrid-labels", "hybrid", "labels"), ("hybrid", "hybrid", "auto"))
# the document-level SAE (``--sae doc``, its corpora stored as ``<name>_doc``): the same two selections,
# then the token-level ranking fused with the document-level one (``search --fuse``), and both fused
# with dense MiniLM as well (``search --mode hybrid --fuse``)
DOC_METHODS = (("doc-sae-labels", "sae", "labels"), ("doc-sae", "sae", "auto"))
FUSED_METHODS = (("sae+doc", "sae", "auto"), ("sae+doc+dense", "hybrid", "auto"))
SHOWN = tuple(m for m, _, _ in METHODS) + ("random",)


def measure(row: dict[str, Any], column: str, relevant: dict[int, bool], all_ids: np.ndarray, store: Any,
            corpus: str, query: str, to_main: dict[int, int] | None = None, **options: Any) -> None:
    """Time one search of every document, then its MAP and P@50 (unreturned documents at random
    below the ranking) into ``row``; ``to_main`` maps the doc ids of another corpus holding the same
    documents to the evaluated one's."""
    t0 = time.perf_counter()
    returned = search(store, corpus, query, k=len(all_ids), **options)["doc_id"].to_list()
    row[f"{column}_s"] = time.perf_counter() - t0
    if to_main is not None:
        returned = [to_main[int(d)] for d in returned if int(d) in to_main]
    order = full_ranking(returned, all_ids, np.random.default_rng(0))
    rel = np.array([relevant[int(d)] for d in order])
    row[f"{column}_map"], row[f"{column}_p50"] = average_precision(rel), precision_at(rel, 50)


def eval_retrieval(h: Harness, tasks: list[RetrievalTask], doc: Harness | None = None) -> pl.DataFrame:
    """MAP / P@50 of every method on every task; ``doc`` adds the document-level SAE's columns."""
    halves = task_halves(tasks)
    rows = []
    for task in tasks:
        h.ensure(task.corpus)
        if doc is not None:
            doc.ensure(task.corpus)
        frame = h.frame(task.corpus)
        ids = h.doc_ids(task.corpus)
        truth = frame.select(task.positive.cast(pl.Boolean).fill_null(False)).to_series().to_numpy()
        valid = ids >= 0
        relevant = dict(zip(ids[valid].tolist(), truth[valid].tolist()))
        all_ids = ids[valid]
        row: dict[str, Any] = {"task": task.name, "half": halves[task.name], "query": task.query,
                               "docs": int(valid.sum()), "positives": int(truth[valid].sum())}
        score = {"row": row, "relevant": relevant, "all_ids": all_ids, "query": task.query}
        for column, mode, select in METHODS:
            measure(column=column, store=h.store, corpus=task.corpus, mode=mode, select=select, **score)
        if doc is not None:
            doc_row = doc.doc_ids(task.corpus)  # frame row → doc_id of the doc-SAE corpus
            to_main = {int(d): int(ids[i]) for i, d in enumerate(doc_row) if d >= 0 and ids[i] >= 0}
            for column, mode, select in DOC_METHODS:
                measure(column=column, store=doc.store, corpus=doc.stored(task.corpus), to_main=to_main, mode=mode,
                        select=select, **score)
            for column, mode, select in FUSED_METHODS:
                measure(column=column, store=h.store, corpus=task.corpus, mode=mode, select=select,
                        fuse=doc.stored(task.corpus), **score)
        rng = np.random.default_rng(0)
        draws = [np.array([relevant[int(d)] for d in rng.permutation(all_ids)]) for _ in range(RANDOM_DRAWS)]
        row["random_map"] = float(np.mean([average_precision(r) for r in draws]))
        row["random_p50"] = float(np.mean([precision_at(r, 50) for r in draws]))
        rows.append(row)
        log(f"retrieval {task.name} ({row['half']}): " + "  ".join(f"{m} {row[f'{m}_map']:.3f}" for m in shown(row)))
    return pl.DataFrame(rows)


def shown(row: dict[str, Any] | pl.DataFrame) -> tuple[str, ...]:
    """The method columns a result has: the fixed ones, then the document-level SAE's when it ran."""
    have = row.columns if isinstance(row, pl.DataFrame) else row
    doc = tuple(m for m, _, _ in DOC_METHODS + FUSED_METHODS if f"{m}_map" in have)
    return SHOWN[:-1] + doc + SHOWN[-1:]


def retrieval_table(df: pl.DataFrame, metric: str = "map") -> pl.DataFrame:
    """One row per task (dev tasks first) with ``metric`` (map or p50) of every method, then the mean
    over the dev half, the held-out half and all tasks."""
    cols = [f"{m}_{metric}" for m in shown(df)]
    body = df.sort(pl.col("half") != "dev", maintain_order=True).select("task", "half", "positives", "docs", *cols)

    def mean(label: str, part: pl.DataFrame) -> pl.DataFrame:
        return part.select(pl.lit(f"**mean {label}**").alias("task"), pl.lit(f"{part.height} tasks").alias("half"),
                           pl.lit(None, pl.Int64).alias("positives"), pl.lit(None, pl.Int64).alias("docs"),
                           *[pl.col(c).mean() for c in cols])

    means = [mean(label, body.filter(cond)) for label, cond in
             (("dev", pl.col("half") == "dev"), ("held-out", pl.col("half") == "held-out"), ("all", pl.lit(True)))]
    out = pl.concat([body, *[m.cast(body.schema) for m in means]])
    suffix = " MAP" if metric == "map" else " P@50"
    return out.rename({c: c.replace(f"_{metric}", suffix) for c in cols})
