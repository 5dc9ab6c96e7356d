"""Shared plumbing of the analyses: corpus ranges, labels, FDR, example documents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import polars as pl

from ..errors import UserError
from ..highlight.snippets import clip_text
from ..labelrule import naming_labels
from ..store.queries import load_query, run_query
from ..store.stats import STATS_TOP_DOCS, corpus_stats
from .cooccurrence import binary_csr, numba_available

if TYPE_CHECKING:
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store

def check_threshold(threshold: float) -> float:
    if threshold < 0 or not np.isfinite(threshold):
        raise UserError(f"--threshold must be a finite number >= 0, not {threshold}")
    return float(threshold)


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), via ``scipy.stats.false_discovery_control``."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=np.float64)
    return false_discovery_control(p, method="bh") if len(p) else p.copy()


def feature_labels(store: Store, sae: str, feature_ids: Iterable[int] | None = None) -> pl.DataFrame:
    """(feature_id, label) with each latent's best label; latents without one are absent."""
    df = store.features(sae, feature_ids).select(pl.col("feature_id").cast(pl.Int32), "label")
    return naming_labels(df, contexts=True)


def with_labels(df: pl.DataFrame, labels: pl.DataFrame, col: str = "feature_id", name: str = "label") -> pl.DataFrame:
    lab = labels.rename({"feature_id": col, "label": name}).with_columns(pl.col(col).cast(df.schema[col]))
    return df.join(lab, on=col, how="left")


def top_documents(store: Store, info: CorpusInfo, feature_ids: list[int], n: int) -> dict[int, list[int]]:
    """feature_id → doc ids where it fires most strongly in this corpus (best first; ties: smaller id).

    Up to :data:`~saeembed.store.stats.STATS_TOP_DOCS` per latent come from the corpus' latent statistics
    (no scan); more are read from the activations in the same order.
    """
    if not feature_ids or n <= 0:
        return {}
    feats = [int(f) for f in feature_ids]
    if n <= STATS_TOP_DOCS:
        stats = corpus_stats(store, info, ["top_docs"], feats)
        return {int(f): [int(d) for d in ds[:n]] for f, ds in zip(stats["feature_id"].to_list(),
                                                                  stats["top_docs"].to_list())}
    df = run_query(store, "top_documents", {"lo": info.lo, "hi": info.hi, "features": feats, "n": int(n)})
    return {int(f): [int(d) for d in ds] for f, ds in zip(df["feature_id"].to_list(), df["doc_ids"].to_list())}


def frequent_features(store: Store, info: CorpusInfo, threshold: float, min_support: int, n: int) -> pl.DataFrame:
    """(feature_id, n_present) of the ``n`` most frequent latents present in at least ``min_support``
    documents, most frequent first (ties: smaller id). At threshold 0 from the latent statistics;
    at another threshold by one scan (``queries/feature_frequencies.sql``)."""
    if threshold == 0:
        return (corpus_stats(store, info, ["n_present"]).filter(pl.col("n_present") >= max(int(min_support), 1))
                .sort(["n_present", "feature_id"], descending=[True, False]).head(int(n))
                .select("feature_id", "n_present"))
    return run_query(store, "feature_frequencies", {"lo": info.lo, "hi": info.hi, "threshold": threshold,
                                                     "min_support": int(max(min_support, 1)), "n": int(n)})


def tokens_of_rows(store: Store, info: CorpusInfo, rows: np.ndarray) -> np.ndarray:
    """Content tokens (at least 1) of the documents at ``rows`` (row_idx values)."""
    docs = store.con.execute("SELECT row_idx, coalesce(n_tokens, 1) AS n_tokens FROM documents "
                             "WHERE corpus_id = ?", [info.corpus_id]).fetchnumpy()
    tokens = np.ones(int(docs["row_idx"].max(initial=-1)) + 1, np.float64)
    tokens[docs["row_idx"].astype(np.int64)] = np.maximum(np.asarray(docs["n_tokens"], np.float64), 1.0)
    return tokens[np.asarray(rows, np.int64)]


def lengths_of_rows(store: Store, info: CorpusInfo, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(quarter-octave length stratum, log content tokens) of the documents at ``rows`` (row_idx values):
    the strata diff compares at (:func:`~saeembed.store.strata.stratum_of`)."""
    from ..store.strata import stratum_of

    tokens = tokens_of_rows(store, info, rows)
    return stratum_of(tokens).astype(np.int64), np.log(tokens)


def doc_texts(store: Store, doc_ids: list[int], max_chars: int = 200) -> dict[int, str]:
    if not doc_ids:
        return {}
    df = store.sql("SELECT doc_id, text FROM documents WHERE doc_id IN (SELECT unnest(?::BIGINT[]))",
                   [[int(d) for d in doc_ids]])
    return {int(d): clip_text(str(t or ""), max_chars) for d, t in df.iter_rows()}


GROUPED_MIN_NNZ = 1_000_000  # below this scipy's conversion is as fast as loading the compiled kernel


def binary_matrix(store: Store, info: CorpusInfo, feature_ids: list[int], threshold: float = 0.0,
                  rows: np.ndarray | None = None, fmt: str = "csr"):
    """Binarised sparse matrix [len(rows), len(feature_ids)] of one corpus; row i is document ``rows[i]``.

    ``rows`` (row_idx values, any order, e.g. aligned with another corpus) defaults to every
    document in row order. Only the requested latents leave DuckDB, so a 10^6-document corpus
    costs memory proportional to the non-zeros of the selected columns, not to d_sae. ``fmt``
    ``csc`` suits column products (correlate), ``csr`` row slicing (cluster).
    """
    from scipy import sparse


    if rows is None:
        rows = store.con.execute("SELECT row_idx FROM documents WHERE corpus_id = ? ORDER BY row_idx",
                                 [info.corpus_id]).fetchnumpy()["row_idx"].astype(np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    feats = np.asarray(feature_ids, dtype=np.int64)
    build = sparse.csc_matrix if fmt == "csc" else sparse.csr_matrix
    if len(feats) == 0 or len(rows) == 0:
        return build((len(rows), len(feats)), dtype=np.float32), rows
    res = store.con.execute(load_query("binary_rows"), {"lo": info.lo, "hi": info.hi,
                                                        "threshold": float(threshold),
                                                        "features": feats.tolist()}).fetchnumpy()
    # no copies of the 10^7–10^8 fetched pairs unless something is dropped (astype/masks copy)
    got = res["row_idx"].astype(np.int64, copy=False)
    fid = res["feature_id"].astype(np.int32, copy=False)
    if rows[0] == 0 and rows[-1] == len(rows) - 1 and bool(np.all(np.diff(rows) == 1)):
        ok = got < len(rows)  # rows 0..n-1 in order: row_idx is the row
        r = got if ok.all() else got[ok]
    else:
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        pos = np.minimum(np.searchsorted(srt, got), len(srt) - 1)
        ok = srt[pos] == got  # documents outside ``rows`` are dropped
        r = order[pos[ok]]
    col_of = np.full(int(feats.max()) + 1, -1, dtype=np.int32)
    col_of[feats] = np.arange(len(feats))
    c = col_of[fid if len(r) == len(fid) else fid[ok]]
    # (doc, latent) is unique in ``activations``, so there are no duplicates to sum
    if fmt == "csr" and len(r) >= GROUPED_MIN_NNZ and numba_available():
        return binary_csr(r, c, (len(rows), len(feats))), rows
    mat = build((np.ones(len(r), np.float32), (r, c)), shape=(len(rows), len(feats)))
    return mat, rows


def paired_rows(store: Store, info_a: CorpusInfo, info_b: CorpusInfo,
                pair_key: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (rows_a[i] ↔ rows_b[i]) of the documents two corpora share.

    Documents pair by ``row_idx`` (the same prompt in row i of both files) or, with ``pair_key``,
    by a field of their ``meta`` JSON (e.g. ``prompt_id``), which also pairs corpora whose rows
    are in different orders or partly missing. A key that repeats within a corpus is refused:
    one prompt answered twice would be counted as two independent pairs; so is pairing by row
    corpora of different sizes (400 tweets against 200 unrelated ones would pair blindly).
    """
    if pair_key is None:
        expr = "row_idx::VARCHAR"
        params: list[Any] = [info_a.corpus_id, info_b.corpus_id]
    else:
        if not pair_key.strip():
            raise UserError("--pair-key is empty; name a field of the documents' meta, e.g. --pair-key prompt_id")
        expr = "json_extract_string(meta, ?)"
        path = '$."' + pair_key.replace('"', '\\"') + '"'
        params = [path, info_a.corpus_id, path, info_b.corpus_id]
    sql = f"""WITH a AS (SELECT row_idx, {expr} AS k FROM documents WHERE corpus_id = ?),
                   b AS (SELECT row_idx, {expr} AS k FROM documents WHERE corpus_id = ?)
              SELECT (SELECT count(*) - count(DISTINCT k) FROM a WHERE k IS NOT NULL) AS dup_a,
                     (SELECT count(*) - count(DISTINCT k) FROM b WHERE k IS NOT NULL) AS dup_b,
                     list(a.row_idx ORDER BY a.row_idx) AS ra, list(b.row_idx ORDER BY a.row_idx) AS rb
              FROM a JOIN b USING (k)"""
    row = store.con.execute(sql, params).fetchall()[0]
    dup_a, dup_b, ra, rb = row
    if pair_key is not None and (dup_a or dup_b):
        which = info_a.name if dup_a else info_b.name
        raise UserError(f"meta field {pair_key!r} repeats in corpus {which!r}; pair on a key that is unique per "
                        "document")
    if not ra:
        how = f"meta field {pair_key!r}" if pair_key else "row_idx"
        hint = "" if pair_key else "; pass --pair-key FIELD to pair on a meta field instead"
        raise UserError(f"corpora {info_a['name']!r} and {info_b['name']!r} share no document by {how}{hint}")
    n_a, n_b = int(info_a.n_docs), int(info_b.n_docs)
    if pair_key is None and n_a != n_b:
        # position says nothing about which documents belong together once the sizes differ
        raise UserError(f"pairing by row position needs corpora of one size, but {info_a['name']!r} has {n_a} "
                        f"documents and {info_b['name']!r} {n_b}: {len(ra)} rows would be paired and "
                        f"{n_a + n_b - 2 * len(ra)} left without a partner; pass --pair-key FIELD (a meta field both "
                        "corpora share, e.g. a prompt id) to pair by key")
    return np.asarray(ra, dtype=np.int64), np.asarray(rb, dtype=np.int64)
