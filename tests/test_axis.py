"""Axis queries: "sentiment" / "positive vs negative" cluster along two opposite ends.

Real reader, real SAE, real corpora (``real_store``'s 400 GoEmotions comments, shipped in
``datasets/``; the Amazon reviews where ../shared exists). Ground truth scores the result only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import normalized_mutual_info_score

from saeembed.analysis.axis import (
    axis_matrix,
    correlated_latents,
    explicit_poles,
    parse_pole_answer,
    propose_poles,
    select_axis,
)
from saeembed.analysis.cluster import cluster, cluster_assignments
from saeembed.analysis.common import corpus_info
from saeembed.api import open_store
from saeembed.errors import UserError
from tests.conftest import needs_amazon


def _truth(store, corpus: str, field: str) -> dict[int, str]:
    docs = store.documents(corpus)
    return {int(d): str(json.loads(m)[field]) for d, m in zip(docs["doc_id"], docs["meta"])}


def test_poles_are_read_from_the_query_or_the_answer() -> None:
    assert explicit_poles("positive vs negative") == ("positive", "negative")
    assert explicit_poles("Formal versus casual") == ("Formal", "casual")
    assert explicit_poles("praise vs. complaint") == ("praise", "complaint")
    assert explicit_poles("sentiment") is None
    assert explicit_poles("a vs b, c") is None
    assert parse_pole_answer(" positive vs negative\nspeed: fast vs slow") == ("positive", "negative")
    assert parse_pole_answer(" Toxic vs non-toxic") == ("toxic", "non-toxic")
    for answer in (" food, drink, sports", " romance vs thriller vs mystery", " news", "", " yes vs yes",
                   " https://x vs y"):
        assert parse_pole_answer(answer) is None, answer


@pytest.mark.slow
def test_the_shipped_reader_names_two_ends_only_for_bipolar_queries() -> None:
    """The local SmolLM2-135M answers the few-shot pattern; categorical queries get a list (no axis)."""
    assert propose_poles("sentiment") == ("positive", "negative")
    assert propose_poles("political leaning") is not None
    for query in ("product category", "topic", "news category", "a, b"):
        assert propose_poles(query) is None, query


def test_correlations_are_pearsons_on_the_sparse_matrix(real_store: Path) -> None:
    st = open_store(real_store)
    shares, _ = axis_matrix(st, "ge")
    score = np.random.default_rng(0).normal(size=shares.shape[0])
    ids, corr, mean, std = correlated_latents(shares.tocsc(), score, 20)
    dense = shares.toarray()
    for f, c, m, s in zip(ids, corr, mean, std):
        assert c == pytest.approx(np.corrcoef(dense[:, f], score)[0, 1], abs=1e-6)
        assert (m, s) == (pytest.approx(dense[:, f].mean()), pytest.approx(dense[:, f].std()))
    others = np.setdiff1d(np.flatnonzero(dense.std(axis=0) > 0), ids)
    best_other = max(abs(np.corrcoef(dense[:, f], score)[0, 1]) for f in others[:500])
    assert np.abs(corr).min() >= best_other - 1e-9


def test_sentiment_query_clusters_along_sentiment(real_store: Path) -> None:
    """On GoEmotions (positive / negative / ambiguous / neutral comments) the default selection turns
    "sentiment" into the axis positive vs negative, which follows the sentiment group several times
    more than label selection of the same query; cluster 0 is the positive end."""
    st = open_store(real_store)
    truth = _truth(st, "ge", "sentiment_group")

    def nmi(res) -> float:
        a = cluster_assignments(res)
        return normalized_mutual_info_score([truth[d] for d in a["doc_id"].to_list()], a["cluster"].to_list())

    res = cluster(st, "ge", query="sentiment", k=2)
    assert res["selection"].to_list() == ["axis", "axis"] and res["poles"][0] == "positive vs negative"
    assert res["method"][0] == "axis" and res["n_features"][0] == 100
    assert int(res["size"].sum()) == corpus_info(st, "ge")["n_docs"]  # every document is placed
    by_axis, by_labels = nmi(res), nmi(cluster(st, "ge", query="sentiment", k=2, select="labels"))
    print(f"ge sentiment NMI axis {by_axis:.3f} labels {by_labels:.3f}")
    assert by_axis > 0.05 and by_axis > 2 * by_labels
    a = cluster_assignments(res)
    share_positive = {c: np.mean([truth[d] == "['positive']" for d in g["doc_id"].to_list()])
                      for (c,), g in a.group_by("cluster")}
    assert share_positive[0] > share_positive[1]
    # the written-out poles select the same way, and --select axis asks the reader as auto does
    assert nmi(cluster(st, "ge", query="positive vs negative", k=2)) > 2 * by_labels
    assert cluster(st, "ge", query="sentiment", k=2, select="axis")["doc_ids"].to_list() == res["doc_ids"].to_list()


def test_axis_latents_are_the_most_correlated_with_the_pole_score(real_store: Path) -> None:
    st = open_store(real_store)
    info = corpus_info(st, "ge")
    axis = select_axis(st, info, ("positive", "negative"), "sentiment", 30)
    assert len(axis.feature_ids) == 30 and np.all(np.diff(np.abs(axis.correlation)) <= 1e-12)
    shares, _ = axis_matrix(st, "ge")
    pos = axis.positions(shares)
    dense = shares[:, axis.feature_ids].toarray()
    np.testing.assert_allclose(pos, ((dense - axis.mean) / axis.std) @ axis.correlation, atol=1e-6)


def test_axis_errors_name_the_fix(real_store: Path) -> None:
    st = open_store(real_store)
    with pytest.raises(UserError, match="two opposite ends"):
        cluster(st, "ge", query="product category", select="axis")
    with pytest.raises(UserError, match="--coverage"):
        cluster(st, "ge", query="positive vs negative", coverage=0.9)
    with pytest.raises(UserError, match="hdbscan"):
        cluster(st, "ge", query="positive vs negative", method="hdbscan")
    # auto with HDBSCAN stays a label query instead of failing
    assert cluster(st, "ge", query="sentiment", method="hdbscan")["selection"][0] == "labels"


def test_cli_reports_the_axis(real_store: Path) -> None:
    from saeembed.cli import main

    r = CliRunner().invoke(main, ["cluster", "ge", "--store", str(real_store), "--query", "sentiment", "--k", "3"])
    assert r.exit_code == 0, r.output
    assert "3 clusters (axis) on 100 latents along the axis positive vs negative" in r.output
    r = CliRunner().invoke(main, ["cluster", "ge", "--store", str(real_store), "--query", "topic", "--select", "axis"])
    assert r.exit_code != 0 and "names no two opposite ends" in r.output and "Traceback" not in r.output


def test_amazon_sentiment_axis_steers_away_from_the_domain(real_store: Path) -> None:
    """Amazon reviews (50 per domain × sentiment): "sentiment" follows sentiment, not the domain."""
    needs_amazon(real_store)
    st = open_store(real_store)
    sentiment, domain = _truth(st, "amazon", "sentiment"), _truth(st, "amazon", "domain")
    a = cluster_assignments(cluster(st, "amazon", query="sentiment", k=2))
    ids, pred = a["doc_id"].to_list(), a["cluster"].to_list()
    by_sentiment = normalized_mutual_info_score([sentiment[d] for d in ids], pred)
    by_domain = normalized_mutual_info_score([domain[d] for d in ids], pred)
    print(f"amazon sentiment axis NMI sentiment {by_sentiment:.3f} domain {by_domain:.3f}")
    assert by_sentiment > 0.1 and by_sentiment > 3 * by_domain
