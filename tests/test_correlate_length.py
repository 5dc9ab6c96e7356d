"""Correlate at equal document length, on GoEmotions comments encoded with the shipped reader.

Max-pooled presence grows with length, so in a corpus of comments from 2 to 50 tokens two latents
that are both commoner in long comments co-occur more than their frequencies predict. A null where
the truth is known (every latent's presence shuffled among comments of the same length: no real
association is left, only length) must give no significant pair under either length control, and the
plain test many; correlate's figures must be the textbook ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from scipy import sparse, stats
from sklearn.linear_model import LogisticRegression

from saeembed.analysis import correlate
from saeembed.analysis.correlate import cooccurrence_pairs, length_cells
from saeembed.analysis.pair_length import LengthCells, bh_over, binomial_sum_tail
from saeembed.api import open_store
from saeembed.cli import main
from saeembed.store.strata import stratum_of


def _tokens(store: Path) -> np.ndarray:
    return open_store(store).sql("SELECT n_tokens FROM documents WHERE corpus_id = (SELECT corpus_id FROM corpora "
                                 "WHERE name = 'ge') ORDER BY row_idx")["n_tokens"].to_numpy().astype(np.float64)


def _presence(store: Path, n_latents: int) -> sparse.csr_matrix:
    mat, _ = open_store(store).embeddings("ge")
    b = (mat > 0).astype(np.float32).tocsc()
    counts = np.diff(b.indptr)
    keep = np.argsort(-counts, kind="stable")
    keep = keep[(counts[keep] >= 5) & (counts[keep] < b.shape[0])][:n_latents]
    return b[:, keep].tocsr()


def _significant(x: sparse.csr_matrix, control: str, tokens: np.ndarray) -> int:
    cells = length_cells(control, (stratum_of(tokens).astype(np.int64), np.log(tokens)), x)
    i, j, c, _ = cooccurrence_pairs(x, min_cooccur=3, cells=cells)
    q = bh_over(cells.p_values(i, j, c), x.shape[1] * (x.shape[1] - 1) // 2)
    return int((q < 0.05).sum())


def test_a_length_only_null_is_significant_plainly_and_not_at_equal_length(real_store: Path) -> None:
    x, tokens = _presence(real_store, 300), _tokens(real_store)
    strata = stratum_of(tokens)
    assert len(np.unique(strata)) >= 10, "the comments span many length strata"
    rng = np.random.default_rng(0)
    dense = x.toarray()
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        for f in range(dense.shape[1]):
            dense[rows, f] = dense[rng.permutation(rows), f]
    null = sparse.csr_matrix(dense)
    plain = _significant(null, "none", tokens)
    assert plain > 200, f"length alone makes {plain} pairs 'co-occur' in a plain test"
    assert _significant(null, "length", tokens) <= 2 and _significant(null, "length-cmh", tokens) <= 2
    # on the real comments both controls still find associations, fewer than the plain test
    real_plain = _significant(x, "none", tokens)
    assert 0 < _significant(x, "length", tokens) < real_plain
    assert 0 < _significant(x, "length-cmh", tokens) < real_plain


def test_p_values_follow_the_exact_tails_where_a_normal_tail_fails() -> None:
    """Fisher's exact test for one cell, and a rare pair (5 and 5 of 800 documents, 3 together), where a
    normal tail claims p = 1e-45 and the exact one is 1e-6; a near-ubiquitous pair through a complement."""
    for n, na, nb, k in [(800, 5, 5, 3), (800, 40, 60, 12), (800, 400, 400, 230), (800, 798, 583, 583),
                         (800, 690, 87, 87), (120, 30, 50, 20)]:
        x = sparse.csr_matrix(np.column_stack([np.arange(n) < na, (np.arange(n) < k) | (np.arange(n) >= n - (nb - k))])
                              .astype(np.float64))
        got = LengthCells.single(x).p_values(np.array([0]), np.array([1]), np.array([k]))[0]
        want = stats.hypergeom.sf(k - 1, n, na, nb)
        assert want / 2.5 <= got <= want * 2.5, (n, na, nb, k, got, want)
    # the saddlepoint sum of binomials against an exact convolution, far into the tail
    rng = np.random.default_rng(0)
    sizes, probs = rng.integers(1, 60, 12).astype(float), rng.beta(0.5, 3, 12)
    dist = np.array([1.0])
    for m, q in zip(sizes, probs):
        dist = np.convolve(dist, stats.binom.pmf(np.arange(int(m) + 1), int(m), q))
    for k in (int(sizes @ probs) + 2, int(sizes @ probs) * 2 + 5):
        assert binomial_sum_tail(sizes, probs[:, None], np.array([k - 0.5]))[0] == pytest.approx(dist[k:].sum(),
                                                                                                   rel=0.01)


def _pairs(store: Path, control: str) -> pl.DataFrame:
    return correlate(open_store(store), "ge", min_support=5, min_cooccur=3, min_npmi=0.3, label_filter=False,
                     top=None, control=control)


def test_stratified_figures_are_the_exact_stratified_ones(real_store: Path) -> None:
    got = _pairs(real_store, "length-cmh")
    assert got.height > 20 and set(got["control"]) == {"length-cmh"} and got["npmi"].is_sorted(descending=True)
    strata = stratum_of(_tokens(real_store))
    mat, _ = open_store(real_store).embeddings("ge")
    b = (mat > 0).toarray()
    n = b.shape[0]
    ratios = []
    for r in got.sample(20, seed=0).iter_rows(named=True):
        a, c = b[:, r["feature_a"]], b[:, r["feature_b"]]
        e, exact = 0.0, np.array([1.0])
        for s in np.unique(strata):  # the exact stratified null: a convolution of hypergeometrics
            m = strata == s
            ns, na, nb = m.sum(), a[m].sum(), c[m].sum()
            e += na * nb / ns
            exact = np.convolve(exact, stats.hypergeom.pmf(np.arange(min(na, nb) + 1), ns, na, nb))
        both = int((a & c).sum())
        assert r["n_ab"] == both and r["expected_ab"] == pytest.approx(e, rel=1e-9)
        assert r["npmi"] == pytest.approx((np.log(both / n) - np.log(e / n)) / -np.log(both / n), abs=1e-9)
        want = exact[both:].sum()
        ratios.append((r["p_value"], want))
    # within a few-fold of the exact tail down to 1e-15 (erring large: the cells' binomials are wider
    # than their hypergeometrics), and far below any threshold beyond it
    assert all(w / 1.5 <= p <= 4 * w if w >= 1e-15 else p < 1e-9 for p, w in ratios)
    assert (got["q_value"] >= got["p_value"]).all()


def test_the_default_expectation_is_each_latents_logistic_length_curve(real_store: Path) -> None:
    """E = Σ_d p_a(d) p_b(d), each p a logistic regression of presence on its stratum's mean log length,
    checked against scikit-learn's (unpenalised) fit of the same model."""
    got = _pairs(real_store, "length")
    assert got.height > 20 and set(got["control"]) == {"length"}
    tokens = _tokens(real_store)
    strata = stratum_of(tokens)
    _, at = np.unique(strata, return_inverse=True)
    covariate = (np.bincount(at, np.log(tokens)) / np.bincount(at))[at][:, None]
    mat, _ = open_store(real_store).embeddings("ge")
    b = (mat > 0).toarray()

    def curve(present: np.ndarray) -> np.ndarray:
        return LogisticRegression(C=1e6, max_iter=1000).fit(covariate, present).predict_proba(covariate)[:, 1]

    for r in got.sample(8, seed=1).iter_rows(named=True):
        want = (curve(b[:, r["feature_a"]]) * curve(b[:, r["feature_b"]])).sum()
        assert r["expected_ab"] == pytest.approx(want, rel=2e-3)
    plain = _pairs(real_store, "none")
    exp = plain["n_a"].cast(pl.Float64) * plain["n_b"] / plain["n_docs"]
    assert set(plain["control"]) == {"none"} and np.allclose(plain["expected_ab"].to_numpy(), exp.to_numpy())


def test_cli_states_what_was_controlled(real_store: Path) -> None:
    res = CliRunner().invoke(main, ["correlate", "--store", str(real_store), "ge", "--top", "3"])
    assert res.exit_code == 0, res.output
    assert "controlled for document length" in res.stderr and "logistic" in res.stderr
    res = CliRunner().invoke(main, ["correlate", "--store", str(real_store), "ge", "--top", "3", "--control", "none"])
    assert res.exit_code == 0 and "controlled for nothing" in res.stderr
    res = CliRunner().invoke(main, ["correlate", "--store", str(real_store), "ge", "--top", "3", "--control", "none",
                                    "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert pl.read_csv(res.stdout.encode())["control"].to_list() == ["none"] * 3


def test_the_browser_ranks_a_latents_neighbours_as_correlate_does(real_store: Path) -> None:
    """The latent page's neighbours come from the strata kept at ingest, correlate's from the documents:
    the same NPMI at equal length for the same pair."""
    from saeembed.browse.data import neighbours

    st = open_store(real_store)
    pairs = correlate(st, "ge", min_support=5, min_cooccur=3, min_npmi=0.0, label_filter=False, top=None,
                      top_features=300, peak_check=False)
    latent = int(pairs["feature_a"][0])
    near = neighbours(st, "ge", latent)
    with_latent = pairs.filter((pl.col("feature_a") == latent) | (pl.col("feature_b") == latent))
    want = {(r["feature_b"] if r["feature_a"] == latent else r["feature_a"]): r["npmi"]
            for r in with_latent.iter_rows(named=True)}
    shared = [(f, v) for f, v in zip(near["feature_id"].to_list(), near["npmi"].to_list()) if f in want]
    assert len(shared) >= 3
    assert all(v == pytest.approx(want[f], abs=1e-6) for f, v in shared)
    # near-duplicates stay on a latent's page, with the share correlate would drop them by
    peaks = correlate(st, "ge", min_support=5, min_cooccur=3, min_npmi=0.0, label_filter=False, top=None,
                      top_features=300, peak_check=True)
    shares = near["same_peak_share"].drop_nulls()
    assert shares.len() > 0 and ((shares >= 0) & (shares <= 1)).all()
    kept = set(peaks.filter((pl.col("feature_a") == latent) | (pl.col("feature_b") == latent))
               .select(pl.when(pl.col("feature_a") == latent).then(pl.col("feature_b")).otherwise(pl.col("feature_a")))
               .to_series().to_list())
    for f, share in zip(near["feature_id"].to_list(), near["same_peak_share"].to_list()):
        if f in want and share is not None:
            assert (f in kept) == (share <= 0.5)


def test_near_ubiquitous_latents_are_left_out_and_said_to_be(real_store: Path) -> None:
    """A latent in nearly every document pairs with anything at NPMI near 1 on the few documents that
    lack it; correlate leaves latents above --max-density out and its header says how many."""
    st = open_store(real_store)
    n = st.sql("SELECT count(*) AS n FROM documents WHERE corpus_id = (SELECT corpus_id FROM corpora "
               "WHERE name = 'ge')")["n"][0]
    capped = correlate(st, "ge", min_support=5, min_cooccur=3, min_npmi=0.2, label_filter=False, top=None,
                       top_features=200, max_density=0.3)
    assert capped.height > 0 and (capped["n_a"] <= 0.3 * n).all() and (capped["n_b"] <= 0.3 * n).all()
    full = correlate(st, "ge", min_support=5, min_cooccur=3, min_npmi=0.2, label_filter=False, top=None,
                     top_features=200, max_density=1.0)
    assert (full["n_a"] > 0.3 * n).any()
    res = CliRunner().invoke(main, ["correlate", "--store", str(real_store), "ge", "--top", "3",
                                    "--max-density", "0.3"])
    assert res.exit_code == 0, res.output
    assert "present in more than 30% of the documents" in res.stderr


def test_pairs_that_peak_on_the_same_token_are_dropped(real_store: Path) -> None:
    """Two latents whose strongest tokens coincide mark one thing seen twice; the stored peaks say so
    without a reader run, and the share is the textbook one."""
    st = open_store(real_store)
    kept = correlate(st, "ge", min_npmi=0.2, top=30)
    shares = kept["same_peak_share"].drop_nulls()
    assert shares.len() == kept.height and (shares <= 0.5).all()
    every = correlate(st, "ge", min_npmi=0.2, top=30, peak_check=False)
    assert every["same_peak_share"].null_count() == every.height
    peaks = st.sql("SELECT doc_id, feature_id, peak_pos FROM activations WHERE value > 0 AND doc_id IN "
                   "(SELECT doc_id FROM documents WHERE corpus_id = (SELECT corpus_id FROM corpora WHERE name = 'ge'))")
    at = {(d, f): p for d, f, p in peaks.iter_rows()}
    docs_of: dict[int, set[int]] = {}
    for d, f in at:
        docs_of.setdefault(f, set()).add(d)
    dropped = 0
    for r in every.iter_rows(named=True):
        both = docs_of[r["feature_a"]] & docs_of[r["feature_b"]]  # 400 comments: all of them are read
        share = np.mean([abs(at[(d, r["feature_a"])] - at[(d, r["feature_b"])]) <= 1 for d in both])
        dropped += share > 0.5
        if share <= 0.5 and r["feature_a"] in kept["feature_a"].to_list():
            row = kept.filter((pl.col("feature_a") == r["feature_a"]) & (pl.col("feature_b") == r["feature_b"]))
            assert row.height == 0 or row["same_peak_share"][0] == pytest.approx(share)
    assert dropped > 0, "some of the top pairs by NPMI peak on the same token"
