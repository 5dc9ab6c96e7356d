"""Ranking metrics, Markdown tables and progress logging shared by the evaluation tasks."""

from __future__ import annotations

import sys

import numpy as np
import polars as pl


def average_precision(relevant: np.ndarray) -> float:
    """AP of a ranking given as a boolean array in rank order (all documents ranked)."""
    hits = np.cumsum(relevant)
    if hits[-1] == 0:
        return float("nan")
    precision_at_hit = hits[relevant] / (np.flatnonzero(relevant) + 1)
    return float(precision_at_hit.mean())


def precision_at(relevant: np.ndarray, k: int) -> float:
    return float(relevant[:k].mean())


def markdown(df: pl.DataFrame, digits: int = 3) -> str:
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.iter_rows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else ("" if v is None else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
