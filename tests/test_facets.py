"""Facet queries: "product category" / "emotion" cluster along the query's categories.

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

from saeembed.analysis.axis import axis_matrix
from saeembed.analysis.cluster import cluster, cluster_assignments
from saeembed.analysis.facets import (
    MIN_CATEGORIES,
    N_CATEGORIES,
    explicit_facets,
    names_a_value,
    parse_category_answers,
    propose_facets,
    select_facets,
    split_facets,
)
from saeembed.analysis.score_latents import latent_score_correlations
from saeembed.api import open_store
from saeembed.errors import UserError
from saeembed.store.corpusinfo import corpus_info
from tests.conftest import needs_amazon

GE_POSITIVE = {"admiration", "amusement", "approval", "caring", "desire", "excitement", "gratitude", "joy", "love",
               "optimism", "pride", "relief"}
GE_NEGATIVE = {"anger", "annoyance", "disappointment", "disapproval", "disgust", "embarrassment", "fear", "grief",
               "nervousness", "remorse", "sadness"}


def _truth(store, corpus: str, field: str) -> dict[int, str]:
    docs = store.documents(corpus)
    return {int(d): str(json.loads(m)[field]) for d, m in zip(docs["doc_id"], docs["meta"])}


def _nmi(truth: dict[int, str], result) -> float:
    a = cluster_assignments(result)
    ids = [d for d in a["doc_id"].to_list() if d in truth]
    pred = dict(zip(a["doc_id"].to_list(), a["cluster"].to_list()))
    return normalized_mutual_info_score([truth[d] for d in ids], [pred[d] for d in ids])


def test_a_list_holding_the_query_itself_names_a_concept_not_a_property() -> None:
    assert names_a_value("anger", ["anger", "angry", "mad"])
    assert names_a_value("dogs", ["dog", "cat", "puppy"])
    assert names_a_value("gratitude", ["thankful", "gratitudeful"])
    assert names_a_value("customer complaints", ["negative", "customer complaints"])
    assert names_a_value("mentions of dogs", ["cat", "mention"])  # "X of Y" is about X
    assert not names_a_value("emotion", ["happy", "sad", "angry"])
    assert not names_a_value("news category", ["sports", "news", "business"])  # about the category
    assert not names_a_value("type of question", ["yes/no", "question", "open"])
    assert not names_a_value("do", ["dog", "cat", "bird"])  # too short to be a stem


def test_categories_are_read_from_the_query_or_counted_in_the_answers() -> None:
    assert explicit_facets("product category: books, DVD , kitchen") == ("product category",
                                                                          ["books", "DVD", "kitchen"])
    assert explicit_facets("news: world, sports, world") == ("news", ["world", "sports"])
    for query in ("product category", "a: b", "a: b: c, d", ": b, c", "books, dvd"):
        assert explicit_facets(query) is None, query
    answers = [" rock, pop, jazz, rock\nfruit: x", " pop, jazz, blues", " Pop, metal", " hot vs cold"]
    assert parse_category_answers(answers) == ["pop", "jazz", "rock", "blues", "metal"]  # per answer, not per mention
    assert parse_category_answers(answers, n=3) == ["pop", "jazz", "rock"]
    for bad in ([" positive vs negative"], [" none"], [" 1, 2, 3, 4"], [" cat, dog"], [""], []):
        assert parse_category_answers(bad) is None, bad
    assert MIN_CATEGORIES == 3


@pytest.mark.slow
def test_the_shipped_reader_lists_categories_for_categorical_queries() -> None:
    """The local SmolLM2-135M, asked once with the few-shot pattern (greedy), lists categories; the same
    query always gets the same ones (cached)."""
    cats = propose_facets("product category")
    assert cats is not None and MIN_CATEGORIES <= len(cats) <= N_CATEGORIES
    assert {"food", "home goods"} <= set(cats) and len(set(cats)) == len(cats)
    assert propose_facets("product category") == cats
    emotions = propose_facets("emotion")
    assert emotions is not None and {"happy", "sad", "angry"} <= set(emotions)
    assert propose_facets("books, dvd") is None  # a keyphrase list is the paper's label query


def test_correlations_with_several_scores_are_pearsons(real_store: Path) -> None:
    st = open_store(real_store)
    shares, _ = axis_matrix(st, "ge")
    scores = np.random.default_rng(1).normal(size=(shares.shape[0], 3))
    corr, mean, std = latent_score_correlations(shares.tocsc(), scores)
    dense = shares.toarray()
    varying = np.flatnonzero(dense.std(axis=0) > 0)[:200]
    for f in varying:
        for j in range(3):
            assert corr[f, j] == pytest.approx(np.corrcoef(dense[:, f], scores[:, j])[0, 1], abs=1e-6)
    assert np.all(corr[dense.std(axis=0) == 0] == 0)
    np.testing.assert_allclose(mean, dense.mean(axis=0), rtol=1e-5, atol=1e-7)  # float32 shares
    np.testing.assert_allclose(std, dense.std(axis=0), rtol=1e-4, atol=1e-6)


def test_facet_latents_and_coordinates(real_store: Path) -> None:
    st = open_store(real_store)
    info = corpus_info(st, "ge")
    shares, doc_ids = axis_matrix(st, "ge")
    cats = ["happy", "sad", "angry"]
    facets = select_facets(st, info, cats, "emotion", 40, shares, doc_ids)
    strength = np.abs(facets.correlation).max(axis=1)
    assert len(facets.feature_ids) == 40 and np.all(np.diff(strength) <= 1e-12)
    coords = facets.coordinates(shares)
    dense = shares[:, facets.feature_ids].toarray()
    np.testing.assert_allclose(coords, ((dense - facets.mean) / facets.std) @ facets.correlation, atol=1e-6)
    clusters, central, k = split_facets(coords, 3)
    assert k == 3 and set(clusters) == {0, 1, 2}
    sizes = np.bincount(clusters)
    assert np.all(np.diff(sizes) <= 0)  # numbered by size
    assert np.all((central <= 1 + 1e-9) & (central >= -1 - 1e-9))


def test_emotion_query_clusters_along_the_sentiment_of_the_emotions(real_store: Path) -> None:
    """On GoEmotions "emotion" becomes a facet query (the reader lists emotions) and follows the
    comments' sentiment group (positive / negative emotions) several times more than label selection."""
    st = open_store(real_store)
    docs = st.documents("ge")
    truth = {}
    for d, m in zip(docs["doc_id"].to_list(), docs["meta"].to_list()):
        emos = {k[4:] for k, v in json.loads(m).items() if k.startswith("emo_") and v}
        groups = {"positive" for e in emos if e in GE_POSITIVE} | {"negative" for e in emos if e in GE_NEGATIVE}
        if len(groups) == 1:
            truth[int(d)] = groups.pop()
    res = cluster(st, "ge", query="emotion", k=2)
    assert res["selection"].to_list() == ["facets", "facets"] and res["method"][0] == "facets"
    assert {"happy", "sad"} <= set(res["facets"][0].split(", ")) and res["poles"][0] is None
    assert int(res["size"].sum()) == corpus_info(st, "ge")["n_docs"]  # every document is placed
    by_facets, by_labels = _nmi(truth, res), _nmi(truth, cluster(st, "ge", query="emotion", k=2, select="labels"))
    print(f"ge emotion NMI (positive vs negative comments) facets {by_facets:.3f} labels {by_labels:.3f}")
    assert by_facets > 0.05 and by_facets > 2 * by_labels
    # named categories take the same route without asking the reader
    named = cluster(st, "ge", query="emotion: happy, sad, angry, grateful", k=2)
    assert named["facets"][0] == "happy, sad, angry, grateful" and named["selection"][0] == "facets"
    assert _nmi(truth, named) > 2 * by_labels


def test_facet_errors_name_the_fix(real_store: Path) -> None:
    st = open_store(real_store)
    with pytest.raises(UserError, match="--coverage"):
        cluster(st, "ge", query="emotion: happy, sad, angry", coverage=0.9)
    with pytest.raises(UserError, match="hdbscan"):
        cluster(st, "ge", query="emotion: happy, sad, angry", method="hdbscan")
    with pytest.raises(UserError, match="names no categories"):
        cluster(st, "ge", query="gratitude, thanks", select="facets")
    # auto with HDBSCAN stays a label query instead of failing
    assert cluster(st, "ge", query="emotion", method="hdbscan")["selection"][0] == "labels"


def test_cli_reports_the_facets(real_store: Path) -> None:
    from saeembed.cli import main

    r = CliRunner().invoke(main, ["cluster", "ge", "--store", str(real_store), "--query",
                                  "emotion: happy, sad, angry", "--k", "3"])
    assert r.exit_code == 0, r.output
    assert "3 clusters (facets) on 100 latents along the facets happy, sad, angry" in r.output
    r = CliRunner().invoke(main, ["cluster", "ge", "--store", str(real_store), "--query", "emotion: happy, sad",
                                  "--method", "hdbscan"])
    assert r.exit_code != 0 and "hdbscan" in r.output and "Traceback" not in r.output


def test_amazon_product_category_follows_the_domain_not_the_sentiment(real_store: Path) -> None:
    """Amazon reviews (50 per domain × sentiment): "product category" follows the domain far more than
    label selection or all latents do, and not the sentiment."""
    needs_amazon(real_store)
    st = open_store(real_store)
    sentiment, domain = _truth(st, "amazon", "sentiment"), _truth(st, "amazon", "domain")
    res = cluster(st, "amazon", query="product category", k=4)
    # the reader's categories, or the corpus' own topics where the categories only restate them
    assert res["selection"][0] in ("facets", "topics")
    by_domain, by_sentiment = _nmi(domain, res), _nmi(sentiment, res)
    by_labels = _nmi(domain, cluster(st, "amazon", query="product category", k=4, select="labels"))
    unfiltered = _nmi(domain, cluster(st, "amazon", unfiltered=True, k=4))
    print(f"amazon product category NMI domain facets {by_domain:.3f} labels {by_labels:.3f} "
          f"unfiltered {unfiltered:.3f}; sentiment {by_sentiment:.3f}")
    assert by_domain > 0.3 and by_domain > 2 * by_labels and by_domain > 1.5 * unfiltered
    assert by_sentiment < 0.05
