"""Grounded proposals: a query's poles or categories steer only when the corpus bears them out.

Statistics on synthetic data where the truth is known; the check and the three routes (kept, replaced
by the corpus' topics, refused) with the shipped reader on ``real_store``'s 400 GoEmotions comments
and, where ../shared exists, its Amazon reviews; every output format names the selection and why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import sparse
from sklearn.metrics import normalized_mutual_info_score

from saeembed.analysis import grounding
from saeembed.analysis.cluster import SELECTION_COLUMNS, cluster, cluster_assignments
from saeembed.analysis.grounding import (
    N_RANDOM,
    SEPARATES_RANK,
    check,
    heldout_signal,
    null_key,
    null_path,
    random_proposals,
    topic_share,
    within_topic_residual,
)
from saeembed.analysis.proposals import SteerData
from saeembed.analysis.topics import compute_topics
from saeembed.api import open_store
from saeembed.store.corpusinfo import corpus_info
from tests.conftest import needs_amazon


def test_topic_share_is_the_variance_the_topics_explain() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    by_topic = labels.astype(float)
    noise = rng.normal(size=2000)
    assert topic_share(by_topic, labels) == pytest.approx(1.0)
    assert topic_share(noise, labels) < 0.01
    mixed = by_topic / by_topic.std() + noise
    assert topic_share(mixed, labels) == pytest.approx(0.5, abs=0.05)
    resid = within_topic_residual(np.c_[by_topic, noise], labels)
    assert np.allclose(resid[:, 0], 0) and np.allclose(resid[:, 1], noise - [noise[labels == t].mean()
                                                                                   for t in labels])


def test_heldout_signal_finds_a_score_the_latents_carry_and_not_noise() -> None:
    """A score that is a sum of a few sparse columns is predicted on the other half; a random score is
    not, however many columns there are to overfit."""
    rng = np.random.default_rng(1)
    shares = sparse.random(600, 800, density=0.05, random_state=2, format="csr")
    carried = np.asarray(shares[:, :5].sum(axis=1)).ravel() + 0.01 * rng.normal(size=600)
    assert heldout_signal(shares, carried, n=5) > 0.9 and heldout_signal(shares, carried, n=50) > 0.5
    assert abs(heldout_signal(shares, rng.normal(size=600), n=50)) < 0.15


def test_random_proposals_are_fixed_and_shaped_like_the_proposal() -> None:
    pairs = random_proposals(2, poles=True)
    assert len(pairs) == N_RANDOM and all(isinstance(p, tuple) and len(p) == 2 for p in pairs)
    lists = random_proposals(5, poles=False)
    assert all(isinstance(p, list) and len(set(p)) == 5 for p in lists)
    assert random_proposals(5, poles=False) == lists and random_proposals(5, poles=False, seed=1) != lists


def test_signals_computed_together_equal_each_computed_alone() -> None:
    """The random null computes its 64 held-out signals in one pass; each must be what it is alone
    (scores of one column and of several, one with latents planted to carry it)."""
    rng = np.random.default_rng(5)
    shares = sparse.random(200, 300, density=0.08, random_state=6, format="csr")
    planted = np.asarray(shares[:, :5].sum(axis=1)).ravel() + rng.normal(scale=0.05, size=200)
    scores = [planted, rng.normal(size=(200, 3)), rng.normal(size=200)]
    together = grounding.heldout_signals(shares, scores)
    assert together == pytest.approx([grounding.heldout_signal(shares, s) for s in scores], rel=1e-9, abs=1e-12)
    assert together[0] > 0.5 > abs(together[2])  # the planted score is predicted, noise is not


def test_random_figures_are_kept_on_disk_so_a_second_process_pays_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The random proposals' figures are computed once and read back from the cache root by a process
    that has never seen them (the in-memory memo emptied); another corpus, phrase or proposal shape, or
    an unreadable file, computes them again."""
    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(3)
    shares = sparse.random(240, 400, density=0.05, random_state=4, format="csr")
    emb = rng.normal(size=(240, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = rng.integers(0, 4, 240)
    calls: list[int] = []  # proposals whose figures were computed
    real = grounding._statistics_of_many

    def counted(shares, emb, labels, proposals, phrase):
        calls.append(len(proposals))
        return real(shares, emb, labels, proposals, phrase)

    monkeypatch.setattr(grounding, "_statistics_of_many", counted)
    proposal = ["happy", "sad", "angry"]

    def fresh_check(lab: np.ndarray = labels, phrase: str = "emotion", prop: list[str] | tuple = proposal):
        grounding._RANDOM.clear()  # what a second process starts with
        calls.clear()
        return check(shares, emb, lab, prop, phrase, corpus_key=("corpus", 1)), sum(calls)

    first, n_first = fresh_check()
    key = null_key(shares, emb, labels, False, 3, "emotion")
    assert n_first == N_RANDOM + 1 and null_path(key).exists()
    second, n_second = fresh_check()
    assert n_second == 1  # only the proposal itself
    assert (second.verdict, second.signal, second.signal_rank, second.topic_share) == \
        (first.verdict, first.signal, first.signal_rank, first.topic_share)
    other = labels.copy()
    other[:10] = (other[:10] + 1) % 4
    assert null_key(shares, emb, other, False, 3, "emotion") != key
    assert fresh_check(lab=other)[1] == N_RANDOM + 1
    assert fresh_check(phrase="mood")[1] == N_RANDOM + 1
    assert fresh_check(prop=("happy", "sad"))[1] == N_RANDOM + 1
    null_path(key).write_bytes(b"not an array")
    assert fresh_check()[1] == N_RANDOM + 1 and fresh_check()[1] == 1


def test_corpus_topics_name_groups_by_their_words() -> None:
    texts = [f"the match ended {i} goals football league" for i in range(30)] + \
            [f"stock prices fell {i} percent on the market" for i in range(30)]
    emb = np.r_[np.tile([1.0, 0.0], (30, 1)), np.tile([0.0, 1.0], (30, 1))].astype(np.float32)
    emb += np.random.default_rng(0).normal(scale=0.01, size=emb.shape).astype(np.float32)
    topics = compute_topics(emb, texts, 2)
    assert sorted(np.bincount(topics.labels).tolist()) == [30, 30]
    names = " ".join(topics.names)
    assert ("football" in names or "league" in names or "goals" in names) and ("market" in names or "prices" in names
                                                                                 or "stock" in names)
    assert np.allclose(np.linalg.norm(topics.centres, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_random_word_lists_rarely_pass_the_check(real_store: Path) -> None:
    """The check's false-acceptance rate: lists of random words (a different draw from the ones it ranks
    against) are said to separate GoEmotions' comments about as rarely as the threshold promises."""
    st = open_store(real_store)
    data = SteerData(st, corpus_info(st, "ge"))
    trials = random_proposals(4, poles=False, n=20, seed=7)
    passed = [data.check(p, "emotion").verdict == "separates" for p in trials]
    print(f"random lists said to separate: {sum(passed)} of {len(passed)}")
    assert sum(passed) <= round(len(passed) * (1 - SEPARATES_RANK) * 3)


@pytest.mark.slow
def test_the_readers_categories_steer_when_they_separate_the_comments(real_store: Path) -> None:
    """"emotion": the reader's happy, sad, angry, jealous separate the comments (beyond their topics), so
    they steer, and every row says where they came from and why."""
    st = open_store(real_store)
    res = cluster(st, "ge", query="emotion", k=4)
    row = res.row(0, named=True)
    assert (row["selection"], row["source"], row["facets"]) == ("facets", "reader", "happy, sad, angry, jealous")
    assert row["grounding"].startswith("the reader's categories for 'emotion' (happy, sad, angry, jealous) separate "
                                       "this corpus' documents (held-out signal above")
    assert set(res["grounding"].to_list()) == {row["grounding"]}


@pytest.mark.slow
def test_the_readers_poles_steer_when_they_separate_the_reviews(real_store: Path) -> None:
    """"sentiment" on Amazon reviews: positive vs negative separate them and hardly follow their product
    domains, so the axis steers."""
    needs_amazon(real_store)
    st = open_store(real_store)
    row = cluster(st, "amazon", query="sentiment", k=2).row(0, named=True)
    assert (row["selection"], row["source"], row["poles"]) == ("axis", "reader", "positive vs negative")
    assert row["grounding"].startswith("the reader's poles for 'sentiment' (positive vs negative) separate this "
                                       "corpus' documents (held-out signal above")


@pytest.mark.slow
def test_the_readers_invented_proposals_are_refused_with_a_reason(real_store: Path) -> None:
    """"target" (the reader: adult vs child) and "stance" (sit, stand, walk, run, …) name nothing these
    comments vary in: the poles are refused (label selection, saying why), the categories replaced by the
    corpus' own topics (saying why)."""
    st = open_store(real_store)
    target = cluster(st, "ge", query="target", k=3).row(0, named=True)
    assert (target["selection"], target["source"], target["poles"]) == ("labels", "reader", None)
    assert target["grounding"].startswith("the reader's poles for 'target' (adult vs child) refused: they do not "
                                          "separate this corpus' documents better than random words")
    assert target["grounding"].endswith("selected by labels")
    stance = cluster(st, "ge", query="stance", k=3).row(0, named=True)
    assert (stance["selection"], stance["source"]) == ("topics", "corpus")
    assert "the reader's categories for 'stance' (sit, stand" in stance["grounding"]
    assert "refused" in stance["grounding"] and stance["grounding"].endswith("the corpus' own topics instead")
    assert stance["facets"] and "sit" not in stance["facets"].split(", ")


@pytest.mark.slow
def test_written_poles_steer_as_asked_with_the_verdict_recorded(real_store: Path) -> None:
    st = open_store(real_store)
    row = cluster(st, "ge", query="ocean vs desert", k=2).row(0, named=True)
    assert (row["selection"], row["source"], row["poles"]) == ("axis", "query", "ocean vs desert")
    assert row["grounding"].startswith("poles from the query, kept as asked; they ")


@pytest.mark.slow
def test_topic_query_on_amazon_follows_the_product_domain(real_store: Path) -> None:
    """Amazon reviews (50 per domain × sentiment): the reader answers "topic" with sports, games, movies,
    tv; the corpus' own topics replace them, and the clustering follows the product domain."""
    needs_amazon(real_store)
    st = open_store(real_store)
    docs = st.documents("amazon")
    domain = {int(d): json.loads(m)["domain"] for d, m in zip(docs["doc_id"], docs["meta"])}

    def nmi(res) -> float:
        a = cluster_assignments(res)
        return normalized_mutual_info_score([domain[d] for d in a["doc_id"].to_list()], a["cluster"].to_list())

    res = cluster(st, "amazon", query="topic", k=4)
    row = res.row(0, named=True)
    assert (row["selection"], row["source"]) == ("topics", "corpus") and len(row["facets"].split(", ")) >= 4
    assert "clustered along the corpus' own topics" in row["grounding"]
    by_topics, unfiltered = nmi(res), nmi(cluster(st, "amazon", unfiltered=True, k=4))
    print(f"amazon 'topic' NMI domain {by_topics:.3f}, unfiltered {unfiltered:.3f}")
    assert by_topics > 0.3 and by_topics > 1.5 * unfiltered
    assert cluster(st, "amazon", query="anything", k=4, select="topics")["selection"][0] == "topics"


# (query, selection, source, what the header says it clustered along, how its "why" starts)
SEPARATES = ("emotion", "facets", "reader", "along the facets happy, sad, angry, jealous (from the reader)",
             "the reader's categories for 'emotion' (happy, sad, angry, jealous) separate this corpus' documents")
REFUSED = ("target", "labels", "reader", "selected by labels",
           "the reader's poles for 'target' (adult vs child) refused: they do not separate this corpus' documents")


@pytest.mark.slow
@pytest.mark.parametrize("case", [SEPARATES, REFUSED], ids=["separates", "refused"])
def test_every_format_names_the_selection_and_why(real_store: Path, tmp_path: Path, case: tuple) -> None:
    """The proposal that steers and the one refused: the terminal header, every machine format (cluster
    rows and --per-document rows) and both HTML pages say what was selected, from where, and why."""
    import html

    import polars as pl

    from saeembed.cli import main

    query, selection, source, along, why = case
    base = ["cluster", "ge", "--store", str(real_store), "--query", query, "--k", "2"]
    r = CliRunner().invoke(main, base)
    assert r.exit_code == 0, r.output
    assert f"latents {along}" in r.output and f"why: {why}" in r.output

    def rows_of(fmt: str, extra: list[str]) -> list[dict]:
        out = tmp_path / f"{query}-{len(extra)}.{fmt}"
        r = CliRunner().invoke(main, base + extra + ["--format", fmt] + (["--output", str(out)]
                                                                         if fmt == "parquet" else []))
        assert r.exit_code == 0, r.output
        if fmt == "parquet":
            return pl.read_parquet(out).to_dicts()
        if fmt in ("csv", "tsv"):
            return pl.read_csv(r.stdout.encode(), separator="," if fmt == "csv" else "\t").to_dicts()
        if fmt == "ndjson":
            return [json.loads(line) for line in r.stdout.splitlines()]
        return json.loads(r.stdout)

    for fmt in ("json", "ndjson", "csv", "tsv", "parquet"):
        for extra in ([], ["--per-document"]):
            rows = rows_of(fmt, extra)
            assert rows and all(set(SELECTION_COLUMNS) <= set(x) for x in rows), (fmt, extra)
            assert {(x["selection"], x["source"]) for x in rows} == {(selection, source)}, (fmt, extra)
            assert all(x["grounding"].startswith(why) for x in rows), (fmt, extra)
    for extra in ([], ["--per-document"]):
        page = tmp_path / f"{query}-{len(extra)}.html"
        r = CliRunner().invoke(main, base + extra + ["--format", "html", "--output", str(page)])
        assert r.exit_code == 0, r.output
        text = html.unescape(page.read_text())
        assert along in text and why in text, extra
