"""Document ids: ``doc_id = corpus_id << 32 | row_idx`` — the one place that knows the packing.

Why this packing: a document's id is stable and derivable from its source row, unique across the
corpora of a store, and a corpus is one contiguous id range, so ``BETWEEN lo AND hi`` filters prune
whole row groups through DuckDB's zone maps. The SQL in ``queries/`` receives ``lo``/``hi`` as
parameters and never repeats the constants.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

ROW_BITS = 32
ROW_MASK = (1 << ROW_BITS) - 1  # the row_idx part of a doc id
MAX_ROWS = ROW_MASK + 1

T = TypeVar("T", int, np.ndarray)


def doc_id(corpus_id: int, row_idx: T) -> T:
    """The id of row ``row_idx`` (an int or an int64 array) of corpus ``corpus_id``."""
    if isinstance(row_idx, np.ndarray):
        return (np.int64(corpus_id) << ROW_BITS) | row_idx.astype(np.int64)
    return (int(corpus_id) << ROW_BITS) | int(row_idx)


def row_of(doc: T) -> T:
    """The source row of a doc id (an int or an int64 array)."""
    if isinstance(doc, np.ndarray):
        return doc.astype(np.int64) & ROW_MASK
    return int(doc) & ROW_MASK


def corpus_of(doc: int) -> int:
    """The corpus id a doc id belongs to."""
    return int(doc) >> ROW_BITS


def corpus_range(corpus_id: int) -> tuple[int, int]:
    """(lo, hi): the smallest and largest doc id corpus ``corpus_id`` can hold (inclusive)."""
    lo = int(corpus_id) << ROW_BITS
    return lo, lo | ROW_MASK


__all__ = ["doc_id", "row_of", "corpus_of", "corpus_range", "ROW_BITS", "ROW_MASK", "MAX_ROWS"]
