"""The fast paths give the results of the slow ones they replace: latent statistics
kept at ingest vs scanning the activations, the numba co-occurrence kernel vs the sparse product,
eigsh vs the dense eigensolver, scipy's Benjamini-Hochberg vs the previous implementation, and
HDBSCAN's approximate_predict for documents beyond the clustered sample.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

import saeembed
from saeembed.analysis import cluster, cluster_assignments, correlate, diff, search
from saeembed.analysis.common import bh_qvalues, binary_matrix
from saeembed.analysis.correlate import cooccurrence_pairs
from saeembed.store.corpusinfo import corpus_info
from saeembed.store.queries import run_query
from saeembed.store.stats import corpus_stats


def _previous_bh(p: np.ndarray) -> np.ndarray:
    """The hand-written Benjamini-Hochberg the package used before scipy's."""
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def test_scipy_bh_gives_the_previous_q_values() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 7, 6144):
        p = np.concatenate([rng.uniform(size=n), rng.uniform(size=n) ** 8, [1.0, 1.0]])
        assert np.allclose(bh_qvalues(p), _previous_bh(p), rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def ge_matrix(real_store: Path):
    st = saeembed.open_store(real_store)
    with st.reading():
        info = corpus_info(st, "ge")
        feats = run_query(st, "feature_frequencies", {"lo": info.lo, "hi": info.hi, "threshold": 0.0,
                                                       "min_support": 2, "n": 400})["feature_id"].to_list()
        mat, _ = binary_matrix(st, info, feats)
    return mat


def test_numba_kernel_counts_exactly_what_the_sparse_product_counts(ge_matrix) -> None:
    pytest.importorskip("numba")
    fast = cooccurrence_pairs(ge_matrix, min_cooccur=1, min_npmi=-1.0, engine="numba")
    slow = cooccurrence_pairs(ge_matrix, min_cooccur=1, min_npmi=-1.0, engine="scipy")
    order_f, order_s = np.lexsort((fast[1], fast[0])), np.lexsort((slow[1], slow[0]))
    for a, b in zip(fast, slow):
        assert np.array_equal(a[order_f], b[order_s])
    assert len(fast[0]) > 1000 and (fast[0] < fast[1]).all()
    half = ge_matrix.shape[1] // 2  # cross mode: columns of one matrix against another's
    xa, xb = ge_matrix[:, :half], ge_matrix[:, half:]
    fast = cooccurrence_pairs(xa, xb, min_cooccur=2, min_npmi=0.1, engine="numba")
    slow = cooccurrence_pairs(xa, xb, min_cooccur=2, min_npmi=0.1, engine="scipy")
    order_f, order_s = np.lexsort((fast[1], fast[0])), np.lexsort((slow[1], slow[0]))
    for a, b in zip(fast, slow):
        assert np.array_equal(a[order_f], b[order_s])


def test_counting_sort_builds_the_csr_matrix_scipy_builds(ge_matrix) -> None:
    pytest.importorskip("numba")
    from scipy import sparse

    from saeembed.analysis.cooccurrence import binary_csr

    coo = ge_matrix.tocoo()
    order = np.random.default_rng(0).permutation(coo.nnz)  # the store returns pairs in any order
    rows, cols = coo.row[order], coo.col[order]
    fast = binary_csr(rows, cols, ge_matrix.shape)
    slow = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=ge_matrix.shape)
    slow.sort_indices()
    assert fast.nnz == slow.nnz > 1000
    assert np.array_equal(fast.indptr, slow.indptr) and np.array_equal(fast.indices, slow.indices)
    assert all(np.all(np.diff(fast.indices[a:b]) > 0) for a, b in zip(fast.indptr[:-1], fast.indptr[1:]))


def test_eigsh_picks_the_same_k_as_the_dense_solver(ge_matrix) -> None:
    from saeembed.analysis.clustering import EIGSH_MIN_N, eigengap_k, jaccard

    sim = jaccard(ge_matrix[np.asarray(ge_matrix.sum(axis=1)).ravel() > 0])
    assert sim.shape[0] >= EIGSH_MIN_N  # the Lanczos path runs
    for max_k in (6, 12):
        assert eigengap_k(sim, max_k) == eigengap_k(sim, max_k, solver="dense")


def _without_stats(src: Path, dst: Path) -> Path:
    """A copy of the store as an older saeembed left it: no latent statistics."""
    shutil.copy(src, dst)
    con = duckdb.connect(str(dst))
    con.execute("DROP TABLE latent_stats")
    con.execute("DROP TABLE corpus_stats")
    con.close()
    return dst


def test_stats_kept_at_ingest_equal_a_scan_and_old_stores_get_them(real_store: Path, tmp_path: Path) -> None:
    st = saeembed.open_store(real_store)
    with st.reading():
        info = corpus_info(st, "ge")
        kept = corpus_stats(st, info)
        scan = run_query(st, "latent_stats", {"lo": info.lo, "hi": info.hi})
        counts = run_query(st, "feature_doc_counts", {"lo": info.lo, "hi": info.hi, "threshold": 0.0})
    assert kept.height == scan.height > 100
    assert kept.select("feature_id", "n_present", "p90", "top_docs").equals(
        scan.select("feature_id", "n_present", "p90", "top_docs").cast(kept.select(
            "feature_id", "n_present", "p90", "top_docs").schema))
    assert dict(counts.iter_rows()) == dict(kept.select("feature_id", "n_present").iter_rows())

    old = _without_stats(real_store, tmp_path / "old.duckdb")
    # label selection: what this checks is the p90 normalisation read from the statistics
    before = search(real_store, "ge", "gratitude and thanks", k=20, select="labels")
    after = search(old, "ge", "gratitude and thanks", k=20, select="labels")  # computes the statistics, keeps them
    _same_ranking(before, after)
    con = duckdb.connect(str(old), read_only=True)
    assert con.execute("SELECT count(*) FROM corpus_stats").fetchall()[0][0] == 1  # kept for next time
    # every latent's row is kept, not only those this search read (it asks for a few latents' p90)
    assert con.execute("SELECT count(*) FROM latent_stats").fetchall()[0][0] == kept.height
    con.close()
    _same_ranking(search(old, "ge", "gratitude and thanks", k=20, select="labels"), before)


def _same_ranking(a: pl.DataFrame, b: pl.DataFrame) -> None:
    """Same documents in the same order; scores equal up to summation order (last bits)."""
    assert a.drop("score").equals(b.drop("score"))
    assert np.allclose(a["score"].to_numpy(), b["score"].to_numpy(), rtol=1e-12, atol=0)


def test_diff_correlate_cluster_agree_with_and_without_kept_stats(real_store: Path, tmp_path: Path) -> None:
    st = saeembed.open_store(real_store)
    names = st.corpora()["name"].to_list()
    if "amazon" not in names:
        pytest.skip("needs the Amazon corpus of ../shared")
    old = _without_stats(real_store, tmp_path / "old.duckdb")
    a = diff(real_store, ["ge", "amazon"], fdr=1, min_diff=0.0, examples=3)
    b = diff(old, ["ge", "amazon"], fdr=1, min_diff=0.0, examples=3)
    assert a.height > 100 and a.equals(b)
    # more example documents than the statistics keep: the scan gives the same order
    c = diff(real_store, ["ge", "amazon"], fdr=1, min_diff=0.0, examples=12)
    assert c["examples_target"].list.head(3).equals(a["examples_target"])
    assert correlate(real_store, "ge", top=50).equals(correlate(old, "ge", top=50))
    assert cluster(real_store, "amazon", unfiltered=True, k=3).equals(cluster(old, "amazon", unfiltered=True, k=3))


def test_hdbscan_beyond_max_docs_places_documents_like_a_full_fit(real_store: Path) -> None:
    st = saeembed.open_store(real_store)
    if "amazon" not in st.corpora()["name"].to_list():
        pytest.skip("needs the Amazon corpus of ../shared")
    full = cluster_assignments(cluster(real_store, "amazon", query="kitchen, books, electronics, dvd movies",
                                       method="hdbscan", min_cluster_size=8))
    part = cluster_assignments(cluster(real_store, "amazon", query="kitchen, books, electronics, dvd movies",
                                       method="hdbscan", min_cluster_size=8, max_docs=200))
    assert part.height == full.height
    # every document, sampled or placed afterwards, has a membership strength in [0, 1]: 0 for noise,
    # above 0 for a document in a cluster
    assert part["membership"].null_count() == 0
    assert ((part["membership"] >= 0) & (part["membership"] <= 1)).all()
    assert (part.filter(pl.col("cluster") == -1)["membership"] == 0).all()
    assert (part.filter(pl.col("cluster") >= 0)["membership"] > 0).all()
    assert part.filter(pl.col("cluster") >= 0).height > 0
    # documents beyond the sample may be noise too, as in a full fit, instead of all being forced in
    assert part.filter(pl.col("cluster") == -1).height > 0
