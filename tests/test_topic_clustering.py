"""Topic clustering: documents grouped along the corpus' own topics as their SAE latents predict them.

The ridge arithmetic against a direct dense fit, cross-fitting against memorisation on synthetic data
where the truth is known, and the topic query on ``real_store``'s Amazon reviews (where ../shared
exists) against the product domain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse
from sklearn.metrics import normalized_mutual_info_score

from saeembed.analysis.cluster import cluster, cluster_assignments
from saeembed.analysis.facets import split_facets
from saeembed.analysis.proposals import SteerData
from saeembed.analysis.score_latents import latent_score_correlations, standardised_projection
from saeembed.analysis.topics import topic_latents
from saeembed.api import open_store
from saeembed.store.corpusinfo import corpus_info
from tests.conftest import needs_amazon


def _topical_shares(n_docs: int, n_latents: int, n_topics: int, seed: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse shares where each topic raises the rate of its own 10 latents, among background noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_topics, n_docs)
    dense = rng.random((n_docs, n_latents)) * (rng.random((n_docs, n_latents)) < 0.04)
    for t in range(n_topics):
        rows = np.flatnonzero(labels == t)
        cols = np.arange(10 * t, 10 * t + 10)
        dense[np.ix_(rows, cols)] += rng.random((len(rows), 10)) * (rng.random((len(rows), 10)) < 0.5)
    return sparse.csr_matrix(dense), labels


def _direct_ridge(x: np.ndarray, y: np.ndarray, fit: np.ndarray, penalty: float) -> np.ndarray:
    """Ridge of ``y`` on ``x`` standardised with the whole corpus' mean and deviation, fitted on ``fit``."""
    mu, sd = x.mean(axis=0), x.std(axis=0)
    z = (x - mu) / sd
    zf, yf = z[fit], y[fit] - y[fit].mean(axis=0)
    lam = penalty * (zf ** 2).sum() / len(fit)
    return np.linalg.solve(zf.T @ zf + lam * np.eye(x.shape[1]), zf.T @ yf)


def test_coordinates_are_the_ridge_fit_on_the_other_folds() -> None:
    """The block-summed arithmetic equals a dense ridge fit: in-sample with one fold, and with five folds
    every document is placed by the weights fitted on the other four folds."""
    shares, labels = _topical_shares(300, 120, 3, seed=0)
    member = (labels[:, None] == np.arange(3)).astype(float)
    one = topic_latents(shares, labels, n=40, penalty=0.5, folds=1)
    x = shares[:, one.feature_ids].toarray()
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    expected = z @ _direct_ridge(x, member, np.arange(300), 0.5)
    assert np.allclose(one.coordinates, expected, atol=1e-8)
    five = topic_latents(shares, labels, n=40, penalty=0.5, folds=5, seed=3)
    fold_of = np.zeros(300, np.int64)
    fold_of[np.random.default_rng(3).permutation(300)] = np.arange(300) % 5
    for f in range(5):
        test = fold_of == f
        w = _direct_ridge(x, member, np.flatnonzero(~test), 0.5)
        assert np.allclose(five.coordinates[test], z[test] @ w, atol=1e-8)
    corr, _, _ = latent_score_correlations(shares.tocsc(), member)
    assert np.allclose(five.association, corr[five.feature_ids])
    assert np.abs(corr).max(axis=1)[five.feature_ids].min() >= np.sort(np.abs(corr).max(axis=1))[-40]


def test_cross_fitting_recovers_topics_the_latents_carry_and_does_not_memorise_others() -> None:
    """Topics carried by latents are recovered from documents' own latents; topics that no latent
    carries (labels drawn at random) are recovered by an in-sample fit, which memorises them, and not by
    the cross-fitted one."""
    shares, labels = _topical_shares(600, 300, 4, seed=1)
    placed = split_facets(topic_latents(shares, labels, n=200).coordinates, 4)[0]
    assert normalized_mutual_info_score(labels, placed) > 0.6
    noise = np.random.default_rng(2).integers(0, 4, 600)
    memorised = topic_latents(shares, noise, n=300, penalty=0.01, folds=1).coordinates.argmax(axis=1)
    crossed = topic_latents(shares, noise, n=300, penalty=0.01).coordinates.argmax(axis=1)
    assert normalized_mutual_info_score(noise, memorised) > 0.4
    assert normalized_mutual_info_score(noise, crossed) < 0.05


@pytest.mark.slow
def test_topic_clustering_on_amazon_keeps_the_product_domain_its_topics_carry(real_store: Path) -> None:
    """400 Amazon reviews, k = 4: the topic clustering follows the product domain more than the
    unfiltered clustering and more than the facets' reading of the topics (one weight per latent: the
    100 latents whose shares correlate most with the documents' similarity to the 8 topic centres); it
    says which latents it read."""
    needs_amazon(real_store)
    st = open_store(real_store)
    docs = st.documents("amazon")
    domain = {int(d): json.loads(m)["domain"] for d, m in zip(docs["doc_id"], docs["meta"])}
    res = cluster(st, "amazon", query="anything", k=4, select="topics")
    row = res.row(0, named=True)
    assert (row["selection"], row["source"]) == ("topics", "corpus") and len(row["facets"].split(", ")) == 4
    assert row["n_features"] == 1000 and all(r["top_features"] for r in res.iter_rows(named=True))
    a = cluster_assignments(res)
    by_topics = normalized_mutual_info_score([domain[d] for d in a["doc_id"].to_list()], a["cluster"].to_list())

    data = SteerData(st, corpus_info(st, "amazon"))
    sims = data.emb @ data.topics(8).centres.T  # each document's closeness to every topic, z-scored per topic
    profile = (sims - sims.mean(axis=0)) / np.maximum(sims.std(axis=0), 1e-12)
    corr, mean, std = latent_score_correlations(data.shares.tocsc(), profile)
    ids = np.argsort(-np.abs(corr).max(axis=1), kind="stable")[:100]
    projected = split_facets(standardised_projection(data.shares, ids, corr[ids], mean[ids], std[ids]), 4)[0]
    one_weight = normalized_mutual_info_score([domain[int(d)] for d in data.doc_ids], projected)
    un = cluster_assignments(cluster(st, "amazon", unfiltered=True, k=4))
    unfiltered = normalized_mutual_info_score([domain[d] for d in un["doc_id"].to_list()], un["cluster"].to_list())
    print(f"amazon topics NMI domain {by_topics:.3f}, one weight per latent {one_weight:.3f}, "
          f"unfiltered {unfiltered:.3f}")
    assert by_topics > 0.5 and by_topics > 1.5 * unfiltered and by_topics > one_weight + 0.05
