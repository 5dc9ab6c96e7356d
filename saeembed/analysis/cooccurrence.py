"""Exact co-occurrence counts of latent pairs: how many documents hold both latents.

Two engines give identical integer counts:

- ``numba`` (the default when the dense count matrix fits, ``fa × fb`` ≤ :data:`DENSE_MAX`): a
  compiled loop over each document's active latents increments a dense matrix — the work is one
  increment per co-occurring pair, with no sparse-output bookkeeping — run in one thread per core
  (``nogil``), each on its own slice of documents and its own matrix, summed at the end. Measured
  ≈7× faster than the sparse product at 5·10^5 documents × 2,000 latents (benchmarks/analysis_latency.py).
- ``scipy``: the sparse product ``Xᵀ X`` computed one block of columns at a time (memory follows the
  surviving pairs, not ``fa × fb``), for wider selections or where numba is not installed.

The compiled kernel is cached under saeembed's cache folder (``numba/``), so only the first call on
a machine pays its compilation (≈1–2 s).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

DENSE_MAX = 4096 * 4096  # largest fa × fb count matrix kept dense per thread (64 MiB as int32)
_KERNELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _kernels() -> dict[str, Any]:
    """The compiled kernels, built (or loaded from numba's on-disk cache) once per process."""
    with _LOCK:
        if _KERNELS:
            return _KERNELS
        from ..paths import cache_path

        os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_path("numba")))
        import numba

        @numba.njit(nogil=True, cache=True)
        def within(indptr, indices, lo, hi, f, out):
            for r in range(lo, hi):
                start, end = indptr[r], indptr[r + 1]
                for a in range(start, end):
                    row = indices[a] * f
                    for b in range(a + 1, end):
                        out[row + indices[b]] += 1

        @numba.njit(nogil=True, cache=True)
        def across(ptr_a, idx_a, ptr_b, idx_b, lo, hi, fb, out):
            for r in range(lo, hi):
                for a in range(ptr_a[r], ptr_a[r + 1]):
                    row = idx_a[a] * fb
                    for b in range(ptr_b[r], ptr_b[r + 1]):
                        out[row + idx_b[b]] += 1

        @numba.njit(nogil=True, cache=True)
        def offsets(keys, n_keys):  # where each key's run starts once the entries are grouped by key
            ptr = np.zeros(n_keys + 1, np.int64)
            for k in range(len(keys)):
                ptr[keys[k] + 1] += 1
            for i in range(n_keys):
                ptr[i + 1] += ptr[i]
            return ptr

        @numba.njit(nogil=True, cache=True)
        def grouped(rows, cols, n_rows, n_cols):
            # counting sort by column, then a stable scatter by row: each row's columns come out sorted
            n = len(rows)
            col_ptr = offsets(cols, n_cols)
            by_col = np.empty(n, np.int64)
            fill = col_ptr[:-1].copy()
            for k in range(n):
                by_col[fill[cols[k]]] = rows[k]
                fill[cols[k]] += 1
            indptr = offsets(rows, n_rows)
            indices = np.empty(n, np.int32)
            fill = indptr[:-1].copy()
            for c in range(n_cols):
                for k in range(col_ptr[c], col_ptr[c + 1]):
                    r = by_col[k]
                    indices[fill[r]] = c
                    fill[r] += 1
            return indptr, indices

        _KERNELS.update(within=within, across=across, grouped=grouped)
        return _KERNELS


def binary_csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]):
    """Binary CSR matrix (float32 ones, sorted indices) from unique (row, column) pairs in any order.

    Why not scipy's COO → CSR: that path sorts and sums duplicates through two format conversions
    (≈2 s of correlate's 8 s at 10^6 documents); (document, latent) pairs are unique, so two
    counting passes in :func:`_kernels`' ``grouped`` give the canonical matrix directly.
    """
    from scipy import sparse

    indptr, indices = _kernels()["grouped"](np.asarray(rows, np.int64), np.asarray(cols, np.int32),
                                            int(shape[0]), int(shape[1]))
    mat = sparse.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=shape)
    mat.has_sorted_indices = True
    return mat


def _threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def dense_pair_counts(xa, xb=None, threads: int | None = None) -> np.ndarray:
    """Counts [fa, fb] (int64) of documents holding column i of ``xa`` and column j of ``xb``.

    Without ``xb`` only the upper triangle (i < j) of ``xa`` against itself is filled. Rows are
    documents; each matrix is binarised (any stored entry counts).
    """
    xa = xa.tocsr()
    xa.sort_indices()
    n, fa = xa.shape
    threads = max(1, min(threads or _threads(), max(1, n // 10_000)))
    bounds = np.linspace(0, n, threads + 1).astype(np.int64)
    ptr_a, idx_a = xa.indptr.astype(np.int64), xa.indices.astype(np.int32)
    kernels = _kernels()
    if xb is None:
        fb = fa
        outs = [np.zeros(fa * fb, dtype=np.int32) for _ in range(threads)]
        work = [(kernels["within"], (ptr_a, idx_a, bounds[t], bounds[t + 1], fa, outs[t])) for t in range(threads)]
    else:
        xb = xb.tocsr()
        xb.sort_indices()
        fb = xb.shape[1]
        ptr_b, idx_b = xb.indptr.astype(np.int64), xb.indices.astype(np.int32)
        outs = [np.zeros(fa * fb, dtype=np.int32) for _ in range(threads)]
        work = [(kernels["across"], (ptr_a, idx_a, ptr_b, idx_b, bounds[t], bounds[t + 1], fb, outs[t]))
                for t in range(threads)]
    runners = [threading.Thread(target=fn, args=args) for fn, args in work]
    for t in runners:
        t.start()
    for t in runners:
        t.join()
    total = outs[0].astype(np.int64)
    for o in outs[1:]:
        total += o
    return total.reshape(fa, fb)


__all__ = ["dense_pair_counts", "binary_csr", "numba_available", "DENSE_MAX"]
