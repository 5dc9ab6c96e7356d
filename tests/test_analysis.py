"""The four analyses (diff, correlate, cluster, search) on real text encoded with the shipped reader.

One module store is a copy of the session's ``real_store`` (400 GoEmotions comments, plus 400
Amazon reviews where ../shared exists) with three small corpora added:

- ``planted``: GoEmotions rows 0..79; rows 0..39 carry an appended sentence about a submarine
  (a concept GoEmotions comments never mention), rows 40..79 are unchanged. Row i pairs with row i
  of ``ge`` (same comment), which makes the paired and cross-corpus modes testable.
- ``ge2``: 30 other GoEmotions comments (rows 400..429), a third corpus for multi-corpus diffing.
- ``other_sae``: 6 comments encoded with a different (random) SAE, which diff must refuse to
  compare.

Latent labels are needed to select latents by meaning. The test SAE may have none (a random SAE
while the default one is trained), so the module imports *data-derived* labels: each latent whose
firing on the even GoEmotions rows is enriched >= 2x for one emotion is labelled with that
emotion's name. Retrieval is then judged on the odd rows only, which the labels never saw.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from saeembed.analysis import cluster, correlate, diff, search
from saeembed.analysis.cluster import cluster_assignments
from saeembed.analysis.common import bh_qvalues
from saeembed.analysis.correlate import cooccurrence_pairs, npmi, same_token_share
from saeembed.analysis.diff import feature_counts, mcnemar_test, two_proportion_test
from saeembed.analysis.retrieve import TEMPERATURE, fuse, rank_weights, score_documents
from saeembed.api import open_store
from saeembed.cli import main
from saeembed.errors import UserError
from saeembed.store.queries import load_query, query_dirs
from saeembed.store.strata import stratum_of
from tests.conftest import GOEMOTIONS_SAMPLE, REPO, make_random_sae, needs_amazon

PHRASE = " P.S. The submarine captain ordered the torpedoes loaded at dawn."
N_PLANTED = 40
LABEL_SOURCE = "test:emotion-lift"


def _emotion_labels(st) -> pl.DataFrame:
    """Label latents by the emotion their firing is most enriched for on the even ``ge`` rows."""
    x, ids = st.embeddings("ge")
    docs = st.documents("ge")
    assert docs["doc_id"].to_list() == ids.tolist()
    meta = [json.loads(m) for m in docs["meta"]]
    emos = sorted(k for k in meta[0] if k.startswith("emo_"))
    y = np.array([[bool(m[e]) for e in emos] for m in meta], dtype=np.float64)
    even = docs["row_idx"].to_numpy() % 2 == 0
    b = (x[even] > 0).astype(np.float64)
    together = np.asarray(b.T @ y[even])
    support = np.asarray(b.sum(axis=0)).ravel()
    lift = (together / np.maximum(support, 1)[:, None]) / np.maximum(y[even].mean(axis=0), 1e-9)[None, :]
    lift[together < 3] = 0
    best = lift.argmax(axis=1)
    keep = np.flatnonzero(lift[np.arange(len(best)), best] >= 2)
    return pl.DataFrame({"feature_id": keep.astype(np.int32), "label": [emos[best[f]][4:] for f in keep],
                         "label_source": [LABEL_SOURCE] * len(keep)})


@pytest.fixture(scope="module")
def store(real_store: Path, smollm2_reader, test_sae_spec: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from saeembed.encode import encode_corpus
    from saeembed.labels import write_labels

    root = tmp_path_factory.mktemp("analysis")
    dst = root / "store.duckdb"
    shutil.copy(real_store, dst)
    sample = pl.read_parquet(GOEMOTIONS_SAMPLE).select("id", "text")
    planted = sample.head(80).with_row_index("row").with_columns(
        (pl.col("row") < N_PLANTED).alias("planted"),
        pl.when(pl.col("row") < N_PLANTED).then(pl.col("text") + PHRASE).otherwise(pl.col("text")).alias("text"),
    ).drop("row")
    planted.write_parquet(root / "planted.parquet")
    sample.slice(400, 30).write_parquet(root / "ge2.parquet")
    sample.slice(430, 6).write_parquet(root / "other.parquet")
    for name in ("planted", "ge2"):
        encode_corpus(dst, root / f"{name}.parquet", name, sae=test_sae_spec, progress=False,
                      loaded_reader=smollm2_reader)
    other_sae = make_random_sae(root / "other_sae", d_in=smollm2_reader.hidden_size, d_sae=256,
                                layer=smollm2_reader.layer, model_name=smollm2_reader.name, activation="topk",
                                k=8, seed=3, bias=-0.5)
    encode_corpus(dst, root / "other.parquet", "other_sae", sae=str(other_sae), progress=False,
                  loaded_reader=smollm2_reader)
    with open_store(dst) as st:
        sae = st.corpus("ge")["sae"]
        labels = _emotion_labels(st)
    assert labels.height >= 20, "too few emotion-enriched latents to label"
    write_labels(dst, sae, labels)
    return dst


def _planted_latents(store: Path, n: int = 10) -> list[int]:
    """The appended sentence's latents. Uncontrolled: appending makes the planted documents longer, and a
    phrase that lengthens its documents is what length control attributes to length."""
    res = diff(store, ["planted", "ge"], target="planted", top=n, examples=0, control="none")
    return res["feature_id"].to_list()


# --------------------------------------------------------------------------------------- diff --
def test_diff_finds_planted_concept_on_its_side(store: Path) -> None:
    res = diff(store, ["planted", "ge"])
    planted = res.filter(pl.col("target") == "planted")
    assert planted.height >= 3
    top = planted.row(0, named=True)
    # present in (nearly) every planted row and rarely elsewhere: the appended sentence's latents
    assert top["n_target"] >= 0.9 * N_PLANTED and top["diff"] >= 0.3
    assert top["q_value"] < 1e-6 and top["test"] == "logistic" and top["control"] == "length"
    assert top["freq_target"] == pytest.approx(top["n_target"] / 80)
    assert top["freq_other"] == pytest.approx(top["n_other"] / 400)
    # its strongest documents are planted rows, and it fires on the appended sentence's tokens
    assert all((d & 0xFFFFFFFF) < N_PLANTED for d in top["examples_target"])
    from saeembed.highlight.recompute import render, token_activations

    for doc in top["examples_target"]:
        toks = token_activations(store, [doc], [top["feature_id"]]).sort("position")
        text = "".join(toks["token"].to_list())
        start = text.rfind("P.S.")
        offsets = np.cumsum([0] + [len(t) for t in toks["token"].to_list()])[:-1]
        in_phrase = toks.filter(pl.Series(offsets >= start - 1))
        assert start > 0 and in_phrase["activation"].max() > 0, "the latent fires inside the appended sentence"
        assert "<<" in render(toks, doc, top["feature_id"])
    # the planted latents are not reported as over-represented in ge
    ge_side = set(res.filter(pl.col("target") == "ge")["feature_id"].to_list())
    assert top["feature_id"] not in ge_side
    # filters: min_diff (on the length-adjusted difference), top, fdr
    assert (res["adj_diff"] >= 0.03).all() and (res["q_value"] <= 0.05).all()
    assert diff(store, ["planted", "ge"], target="planted", top=2, examples=0).height == 2


def test_diff_counts_and_statistics_match_brute_force(store: Path) -> None:
    st = open_store(store)
    info = {"planted": st.embeddings("planted"), "ge": st.embeddings("ge"), "ge2": st.embeddings("ge2")}
    counts = {c: np.asarray((m > 0).sum(axis=0)).ravel() for c, (m, _) in info.items()}
    ns = {c: m.shape[0] for c, (m, _) in info.items()}
    from saeembed.store.corpusinfo import corpus_info

    assert np.array_equal(feature_counts(st, corpus_info(st, "ge")), counts["ge"])
    # multi-corpus: the target against the most frequent of the others
    res = diff(st, ["planted", "ge", "ge2"], target="planted", fdr=None, min_diff=-1.0, top=None, examples=0,
               control="none", keep_ubiquitous=True)
    f_ge, f_ge2 = counts["ge"] / ns["ge"], counts["ge2"] / ns["ge2"]
    k_other = np.where(f_ge >= f_ge2, counts["ge"], counts["ge2"])
    assert res.height == int(((counts["planted"] + k_other) > 0).sum())
    for r in res.head(50).iter_rows(named=True):
        f = r["feature_id"]
        fg, f2 = counts["ge"][f] / ns["ge"], counts["ge2"][f] / ns["ge2"]
        assert r["other"] == ("ge" if fg >= f2 else "ge2")
        assert r["freq_other"] == pytest.approx(max(fg, f2))
        assert r["freq_target"] == pytest.approx(counts["planted"][f] / ns["planted"])
    # z-test against a textbook Yates-corrected chi-square test; BH against a direct computation
    from scipy.stats import chi2_contingency

    k1, k2 = 30, 12
    chi2, p, _, _ = chi2_contingency([[k1, 80 - k1], [k2, 400 - k2]], correction=True)
    z, pz = two_proportion_test(np.array([k1]), 80, np.array([k2]), 400)
    assert pz[0] == pytest.approx(p, rel=1e-9) and z[0] ** 2 == pytest.approx(chi2, rel=1e-9)
    pv = np.array([0.01, 0.04, 0.03, 0.2])
    assert np.allclose(bh_qvalues(pv), [0.04, 0.16 / 3, 0.16 / 3, 0.2])  # min over j >= i of p_(j) m / j
    assert mcnemar_test(np.array([10]), np.array([0]))[0] == pytest.approx(2 * 0.5 ** 10)


def test_diff_paired_uses_matched_rows(store: Path) -> None:
    paired = diff(store, ["planted", "ge"], paired=True, pair_key="id", target="planted", top=5, examples=0,
                  control="none")
    assert paired["test"].unique().to_list() == ["mcnemar"]
    assert (paired["docs_target"] == 80).all() and (paired["docs_other"] == 80).all()
    # discordant pairs counted from the matrices: planted row i against ge row i
    st = open_store(store)
    a = (st.embeddings("planted")[0] > 0).toarray()
    g = (st.embeddings("ge")[0][:80] > 0).toarray()
    for r in paired.iter_rows(named=True):
        f = r["feature_id"]
        only_a, only_b = int((a[:, f] & ~g[:, f]).sum()), int((~a[:, f] & g[:, f]).sum())
        assert (r["n_target"], r["n_other"]) == (int(a[:, f].sum()), int(g[:, f].sum()))
        assert r["p_value"] == pytest.approx(mcnemar_test(np.array([only_a]), np.array([only_b]))[0])
        assert r["log_odds"] == pytest.approx(np.log((only_a + 0.5) / (only_b + 0.5)))
        assert (r["only_target"], r["only_other"]) == (only_a, only_b)
    # rows 40..79 are identical on both sides, so the difference lives in the planted rows
    top = paired.row(0, named=True)
    assert top["n_target"] - top["n_other"] >= 0.8 * N_PLANTED and top["p_value"] < 1e-9
    # the appended sentence makes exactly the planted documents longer: with the pair's length ratio
    # held fixed, length explains the discordant pairs as well as the corpus does, and the evidence drops
    controlled = diff(store, ["planted", "ge"], paired=True, pair_key="id", target="planted", fdr=None,
                      min_diff=-2.0, top=None, examples=0).filter(pl.col("feature_id") == top["feature_id"])
    assert controlled["test"].to_list() == ["paired-logistic"]
    assert controlled["p_value"][0] > 1e3 * top["p_value"]
    assert (controlled["only_target"][0], controlled["only_other"][0]) == (top["only_target"], top["only_other"])
    # pairing 80 planted rows with the first 80 of ge's 400 by position: refused, the sizes differ
    with pytest.raises(UserError, match="80 rows would be paired and 320 left without a partner"):
        diff(store, ["planted", "ge"], paired=True)
    with pytest.raises(UserError, match="exactly two"):
        diff(store, ["planted", "ge", "ge2"], paired=True)
    with pytest.raises(UserError, match="share no document"):
        diff(store, ["planted", "ge"], paired=True, pair_key="no_such_field")


def test_diff_refuses_bad_input(store: Path) -> None:
    with pytest.raises(UserError, match="different SAEs"):
        diff(store, ["ge", "other_sae"])
    with pytest.raises(UserError, match="no corpus named 'nope'"):
        diff(store, ["ge", "nope"])
    with pytest.raises(UserError, match="at least two"):
        diff(store, ["ge"])
    with pytest.raises(UserError, match="named twice"):
        diff(store, ["ge", "ge"])
    with pytest.raises(UserError, match="--target"):
        diff(store, ["ge", "planted"], target="ge2")


# ---------------------------------------------------------------------------------- correlate --
def _brute_npmi(mat, min_support: int, min_cooccur: int, top_features: int
                ) -> dict[tuple[int, int], tuple[float, int]]:
    """NPMI of every pair of the ``top_features`` most frequent latents, from a dense 0/1 matrix and
    the textbook formula."""
    b = (mat > 0).toarray().astype(np.int64)
    n = b.shape[0]
    sup = b.sum(axis=0)
    order = np.lexsort((np.arange(len(sup)), -sup))  # most frequent first, ties by id
    cols = np.array([f for f in order if min_support <= sup[f] < n][:top_features])
    co = b[:, cols].T @ b[:, cols]
    x, y = np.nonzero(np.triu(co >= min_cooccur, k=1))
    c = co[x, y]
    pij, pi, pj = c / n, sup[cols[x]] / n, sup[cols[y]] / n
    with np.errstate(divide="ignore"):
        v = np.where(pij == 1, 1.0, np.log(pij / (pi * pj)) / -np.log(pij))
    return {(int(min(cols[i], cols[j])), int(max(cols[i], cols[j]))): (float(w), int(k))
            for i, j, w, k in zip(x, y, v, c)}


def test_npmi_matches_brute_force(store: Path) -> None:
    st = open_store(store)
    mat, _ = st.embeddings("ge")
    want = _brute_npmi(mat, min_support=3, min_cooccur=2, top_features=300)
    got = correlate(st, "ge", min_support=3, min_cooccur=2, min_npmi=-1, label_filter=False, top=None,
                    top_features=300, control="none", max_density=1.0, peak_check=False)
    assert (got["feature_a"] < got["feature_b"]).all()
    have = {(a, b): (v, c) for a, b, v, c in got.select("feature_a", "feature_b", "npmi", "n_ab").iter_rows()}
    assert len(want) > 1000 and set(have) == set(want)
    assert all(abs(have[p][0] - want[p][0]) < 1e-9 and have[p][1] == want[p][1] for p in want)
    assert got["npmi"].is_sorted(descending=True)
    # blockwise computation (tiny blocks) gives the same pairs as one block
    b = (mat[:, :300] > 0).astype(np.float32).tocsr()
    one = cooccurrence_pairs(b, min_cooccur=1)
    many = cooccurrence_pairs(b, min_cooccur=1, block_entries=1)
    key = lambda r: sorted(zip(*[x.tolist() for x in r]))  # noqa: E731
    assert key(one) == key(many)
    assert npmi(np.array([0, 5, 10]), np.array([5, 5, 10]), np.array([5, 5, 10]), 10).tolist() == [-1.0, 1.0, 1.0]
    # the threshold filter and top-N
    strong = correlate(st, "ge", min_support=3, min_cooccur=2, min_npmi=0.5, label_filter=False, top=7, control="none",
                       max_density=1.0, peak_check=False)
    assert strong.height == 7 and (strong["npmi"] >= 0.5).all()


def test_correlate_cross_corpus_pairs_documents(store: Path) -> None:
    st = open_store(store)
    a, _ = st.embeddings("planted")
    g, _ = st.embeddings("ge")
    g = g[:80]  # planted row i pairs with ge row i
    res = correlate(st, "planted", with_corpus="ge", pair_key="id", min_support=3, min_cooccur=3, min_npmi=-1,
                    top=None, label_filter=False, top_features=300, control="none")
    ba, bg = (a > 0).toarray(), (g > 0).toarray()
    for r in res.sample(min(40, res.height), seed=0).iter_rows(named=True):
        x, y = ba[:, r["feature_a"]], bg[:, r["feature_b"]]
        c, n = int((x & y).sum()), 80
        assert (r["n_a"], r["n_b"], r["n_ab"], r["n_docs"]) == (x.sum(), y.sum(), c, n)
        assert r["npmi"] == pytest.approx(np.log(c * n / (x.sum() * y.sum())) / -np.log(c / n), abs=1e-9)
    # the identical rows 40..79 make each latent correlate with itself across the two corpora
    same = res.filter(pl.col("feature_a") == pl.col("feature_b"))
    assert same.height > 0 and same["npmi"].median() > 0.4
    # stratified, a pair of documents falls in the cell of both its documents' lengths (an octave each)
    held = correlate(st, "planted", with_corpus="ge", pair_key="id", min_support=3, min_cooccur=3, min_npmi=-1,
                     top=None, label_filter=False, top_features=300, control="length-cmh")
    octave = {name: stratum_of(st.sql("SELECT n_tokens FROM documents WHERE corpus_id = (SELECT corpus_id FROM "
                                      f"corpora WHERE name = '{name}') ORDER BY row_idx")["n_tokens"].to_numpy()[:80]
                               ) // 4 for name in ("planted", "ge")}
    cell = octave["planted"] * 100 + octave["ge"]
    for r in held.sample(min(40, held.height), seed=0).iter_rows(named=True):
        x, y = ba[:, r["feature_a"]], bg[:, r["feature_b"]]
        want = sum(x[cell == k].sum() * y[cell == k].sum() / (cell == k).sum() for k in np.unique(cell))
        assert r["control"] == "length-cmh" and r["expected_ab"] == pytest.approx(want, rel=1e-9)
    # by default each side's latent follows its own logistic curve in its own document's log length
    fitted = correlate(st, "planted", with_corpus="ge", pair_key="id", min_support=3, min_cooccur=3, min_npmi=-1,
                       top=None, label_filter=False, top_features=300)
    curves = {}
    for name in ("planted", "ge"):
        tokens = st.sql("SELECT n_tokens FROM documents WHERE corpus_id = (SELECT corpus_id FROM corpora WHERE "
                        f"name = '{name}') ORDER BY row_idx")["n_tokens"].to_numpy()[:80].astype(float)
        strata = np.unique(stratum_of(tokens), return_inverse=True)[1]
        curves[name] = (np.bincount(strata, np.log(tokens)) / np.bincount(strata))[strata][:, None]

    def curve(present: np.ndarray, name: str) -> np.ndarray:
        fit = LogisticRegression(C=1e6, max_iter=1000).fit(curves[name], present)
        return fit.predict_proba(curves[name])[:, 1]

    for r in fitted.sample(6, seed=0).iter_rows(named=True):
        want = (curve(ba[:, r["feature_a"]], "planted") * curve(bg[:, r["feature_b"]], "ge")).sum()
        assert r["control"] == "length" and r["expected_ab"] == pytest.approx(want, rel=2e-3)
    # pairing by position would pair 80 of ge's 400 comments blindly: refused
    with pytest.raises(UserError, match="80 rows would be paired and 320 left without a partner"):
        correlate(st, "planted", with_corpus="ge", min_support=3, top_features=300)
    with pytest.raises(UserError, match="--with"):
        correlate(st, "ge", pair_key="id")


def test_correlate_label_filter_and_token_check(store: Path) -> None:
    st = open_store(store)
    kept = correlate(st, "ge", min_support=3, min_cooccur=2, min_npmi=0.0, top=None, top_features=300)
    everything = correlate(st, "ge", min_support=3, min_cooccur=2, min_npmi=0.0, top=None, label_filter=False,
                           top_features=300)
    sims = everything["label_similarity"].drop_nulls()
    assert sims.len() > 0 and (sims >= 0.2).any(), "some co-occurring latents share an emotion label"
    assert (kept["label_similarity"].drop_nulls() < 0.2).all()
    assert kept.height == everything.filter(pl.col("label_similarity").is_null()
                                            | (pl.col("label_similarity") < 0.2)).height
    # same-token check: pairs of latents of the planted sentence are checked on recomputed tokens
    checked = correlate(st, "planted", min_support=20, min_cooccur=20, min_npmi=0.5, label_filter=False,
                        token_check=True, token_sample=2, top=2, control="none")
    assert "same_token_share" in checked.columns and checked.height > 0
    shares = checked["same_token_share"].drop_nulls()
    assert ((shares >= 0) & (shares <= 0.5)).all()
    assert same_token_share([{3}, {9}], [{4}, {1}]) == 0.5
    assert same_token_share([{1, 2, 3}], [{10, 11}]) == 0.0
    assert same_token_share([], []) is None


# ------------------------------------------------------------------------------------ cluster --
def _planted_group(assignments: pl.DataFrame) -> tuple[int, float, float]:
    """(cluster holding most planted rows, share of planted rows in it, purity of that cluster)."""
    planted = assignments.filter(pl.col("row_idx") < N_PLANTED)["cluster"]
    best = int(planted.mode().sort()[0])
    members = assignments.filter(pl.col("cluster") == best)
    return best, float((planted == best).mean()), float((members["row_idx"] < N_PLANTED).mean())


def test_cluster_separates_planted_documents(store: Path) -> None:
    feats = _planted_latents(store)
    res = cluster(store, "planted", features=feats)  # k by eigengap
    assert set(res.columns) >= {"cluster", "size", "top_features", "top_labels", "central_docs", "doc_ids"}
    assert res["size"].sum() == 80 and 2 <= res["k"][0] <= 12 and res["n_features"][0] == len(feats)
    docs = cluster_assignments(res)
    assert docs.height == 80 and docs["doc_id"].n_unique() == 80
    best, completeness, purity = _planted_group(docs)
    assert best >= 0 and completeness == 1.0 and purity >= 0.75, (completeness, purity)
    # rows without any selected latent cannot be placed: cluster -1, and only those
    unplaced = docs.filter(pl.col("cluster") == -1)["doc_id"].to_list()
    present = set(open_store(store).sql(
        "SELECT DISTINCT doc_id FROM activations WHERE feature_id IN (SELECT unnest(?::INTEGER[])) AND value > 0",
        [feats])["doc_id"].to_list())
    assert not set(unplaced) & present and len(unplaced) + len(present & set(docs["doc_id"])) == 80
    # the planted cluster is described by planted latents; its central documents are its members
    row = res.filter(pl.col("cluster") == best).row(0, named=True)
    assert set(row["top_features"]) & set(feats) and row["top_diffs"][0] > 0.5
    assert set(row["central_docs"]) <= set(row["doc_ids"]) and row["centrality"] == sorted(row["centrality"],
                                                                                           reverse=True)
    from saeembed.analysis.clustering import central_references

    refs = central_references(np.array([0, 0, 0, 1, 1, -1]), np.array([.1, .5, .3, .2, .9, 0]), 2)
    assert refs.tolist() == [1, 2, 3, 4]
    # HDBSCAN needs no k and isolates the planted group
    best, completeness, purity = _planted_group(cluster_assignments(
        cluster(store, "planted", features=feats, method="hdbscan", min_cluster_size=5)))
    assert best >= 0 and completeness >= 0.8 and purity >= 0.9, (completeness, purity)
    # past max_docs a sample is clustered and the rest join their nearest cluster
    sampled = cluster_assignments(cluster(store, "planted", features=feats, k=3, max_docs=30))
    assert sampled.height == 80
    best, completeness, purity = _planted_group(sampled)
    assert best >= 0 and completeness >= 0.9 and purity >= 0.75, (completeness, purity)


def test_cluster_by_query_and_unfiltered(store: Path) -> None:
    res = cluster(store, "ge", query="gratitude, anger", k=3)
    assert res.filter(pl.col("cluster") >= 0).height == 3
    assert res["selection"].unique().to_list() == ["labels"]  # the shipped SAE is labelled, so auto means labels
    assert 0 < res["n_features"][0] <= 200
    # clustering on latents chosen for the query concentrates grateful comments in one cluster
    docs = open_store(store).documents("ge").select(
        "doc_id", pl.col("meta").str.json_path_match("$.emo_gratitude").eq("true").alias("grateful"))
    shares = (cluster_assignments(res).join(docs, on="doc_id").filter(pl.col("cluster") >= 0)
              .group_by("cluster").agg(pl.col("grateful").mean()))
    assert shares["grateful"].max() >= 1.8 * docs["grateful"].mean(), shares
    sel = cluster(store, "ge", query="gratitude", k=2, describe="selected")
    from saeembed.analysis.select import select_features
    from saeembed.store.corpusinfo import corpus_info

    st = open_store(store)
    with st.reading():  # the latents cluster selects by default: by label, since the shipped SAE is labelled
        info = corpus_info(st, "ge")
        chosen = set(select_features(st, "gratitude", info["sae"], method="labels", info=info)["feature_id"])
    assert all(set(fs) <= chosen for fs in sel["top_features"].to_list())
    unf = cluster(store, "ge", unfiltered=True, k=3)
    assert unf["selection"][0] == "unfiltered"
    assert unf["n_features"][0] > res["n_features"][0]
    with pytest.raises(UserError, match="exactly one"):
        cluster(store, "ge", query="x", unfiltered=True)
    with pytest.raises(UserError, match="outside"):
        cluster(store, "ge", features="1,999999")
    with pytest.raises(UserError, match="comma-separated integers"):
        cluster(store, "ge", features="a,b")


def test_cluster_coverage_selection_and_unplaced_documents(store: Path) -> None:
    """--coverage takes latents in score order until the target share of documents has one (no fewer
    than --per-phrase); --unplaced nearest gives documents without a selected latent a cluster."""
    from saeembed.analysis.cluster import coverage_count, coverage_features
    from saeembed.analysis.common import binary_matrix
    from saeembed.analysis.select import select_features
    from saeembed.store.corpusinfo import corpus_info

    st = open_store(store)
    with st.reading():
        info = corpus_info(st, "ge")
        ranked = select_features(st, "gratitude", info["sae"], k=int(info["d_sae"]), method="auto",
                                 info=info)["feature_id"].to_list()
        mat, _ = binary_matrix(st, info, ranked)
        dense = mat.toarray() > 0

        def covered(n: int) -> float:
            return float(dense[:, :n].any(axis=1).mean())

        for share in (0.5, 0.9, 0.95):
            n = coverage_count(mat, share)
            assert covered(n) >= share and (n == 1 or covered(n - 1) < share), (share, n)
        narrow, wide = coverage_count(mat, 0.5), coverage_count(mat, 0.95)
        assert narrow < wide  # a lower target (a narrower match) keeps fewer latents
        feats = coverage_features(st, "gratitude", info, 0.95, 1, "auto", 0.0)
        assert feats == ranked[:wide]
        assert len(coverage_features(st, "gratitude", info, 0.5, wide + 5, "auto", 0.0)) == wide + 5  # the floor
        both = coverage_features(st, "gratitude, anger", info, 0.9, 1, "auto", 0.0)
        got, _ = binary_matrix(st, info, both)
        assert float((np.asarray(got.sum(axis=1)).ravel() > 0).mean()) >= 0.9
    # "auto" above is select_features' rule (descriptors here); cluster's own auto would pick labels
    res = cluster(store, "ge", query="gratitude", k=3, coverage=0.95, per_phrase=1, select="descriptors")
    assert res["n_features"][0] == wide
    # one latent leaves most documents without a selected latent: unassigned (-1) by default, nearest joins them
    rare = [ranked[0]]
    alone = cluster_assignments(cluster(store, "ge", features=rare, k=2))
    joined = cluster_assignments(cluster(store, "ge", features=rare, k=2, unplaced="nearest"))
    assert (alone["cluster"] < 0).sum() > 0
    assert joined.height == alone.height and (joined["cluster"] < 0).sum() < (alone["cluster"] < 0).sum()
    keep = alone.filter(pl.col("cluster") >= 0).select("doc_id", "cluster")
    assert keep.join(joined, on="doc_id").filter(pl.col("cluster") != pl.col("cluster_right")).height == 0
    with pytest.raises(UserError, match="coverage"):
        cluster(store, "ge", query="gratitude", coverage=1.5)


def test_cluster_unfiltered_follows_amazon_domains(store: Path) -> None:
    needs_amazon(store)
    from sklearn.metrics import normalized_mutual_info_score

    res = cluster_assignments(cluster(store, "amazon", unfiltered=True, k=4))
    docs = open_store(store).documents("amazon").select(
        "doc_id", pl.col("meta").str.json_path_match("$.domain").alias("domain"))
    joined = res.join(docs, on="doc_id")
    assert normalized_mutual_info_score(joined["domain"], joined["cluster"]) > 0.1


# ------------------------------------------------------------------------------------- search --
def test_score_documents_matches_the_paper_formula(store: Path) -> None:
    st = open_store(store)
    from saeembed.store.corpusinfo import corpus_info

    info = corpus_info(st, "ge")
    mat, ids = st.embeddings("ge")
    mat = mat.toarray()
    freq = (mat > 0).sum(axis=0)
    feats = [int(f) for f in np.argsort(-freq, kind="stable")[5:25]]
    w = rank_weights(len(feats))
    assert w[0] == 1.0 and w[-1] == pytest.approx(np.exp(-(len(feats) - 1) / (len(feats) * TEMPERATURE)))
    got = score_documents(st, info, feats, w.tolist(), 15)
    cols = mat[:, feats]
    p90 = np.array([np.quantile(c[c > 0], 0.9) for c in cols.T])
    want = (cols / p90 * w).sum(axis=1)
    order = np.argsort(-want, kind="stable")[:15]
    assert got["doc_id"].to_list() == ids[order].tolist()
    assert np.allclose(got["score"].to_numpy(), want[order])


def test_search_sae_mode_finds_held_out_emotion(store: Path) -> None:
    st = open_store(store)
    docs = st.documents("ge")
    grateful = {d for d, m in zip(docs["doc_id"], docs["meta"]) if json.loads(m)["emo_gratitude"]}
    odd = set(docs.filter(pl.col("row_idx") % 2 == 1)["doc_id"].to_list())
    res = search(st, "ge", "gratitude", k=60)
    assert res["rank"].to_list() == list(range(1, 61)) and res["score"].is_sorted(descending=True)
    held_out = [d for d in res["doc_id"].to_list() if d in odd][:10]
    base = len(grateful & odd) / len(odd)
    precision = np.mean([d in grateful for d in held_out])
    assert precision >= max(0.5, 3 * base), (precision, base)
    # hybrid: reciprocal rank fusion of the sae and dense rankings, both ranks shown (on the smaller
    # planted corpus, whose dense embeddings the next test reuses)
    hyb = search(st, "planted", "gratitude", k=10, mode="hybrid")
    assert {"sae_rank", "dense_rank", "top_feature"} <= set(hyb.columns)
    rrf = sum(1 / (60 + hyb[c][0]) for c in ("sae_rank", "dense_rank") if hyb[c][0] is not None)
    assert hyb["score"][0] == pytest.approx(rrf)
    fused = fuse(pl.DataFrame({"doc_id": [1, 2, 3], "top_feature": [7, 7, 7]}),
                 pl.DataFrame({"doc_id": [3, 2, 9]}), 4)
    assert fused["doc_id"].to_list() == [3, 2, 1, 9]  # 3: 1/63 + 1/61 edges out 2: 1/62 + 1/62


def test_search_explanation_is_the_latents_that_make_the_score(store: Path) -> None:
    """Each hit's contributions, recomputed from the stored activations (activation / p90 × weight of
    every selected latent), sum to its latent score; the explanation lists the largest ones, largest
    first, until they make up two thirds of it (at most five), with their labels. The ranking score is
    the latent score less the least-squares fit of latent score on log length over every document."""
    from saeembed.analysis.retrieve import EXPLAIN_MAX, EXPLAIN_SHARE
    from saeembed.analysis.select import select_features
    from saeembed.store.corpusinfo import corpus_info
    from saeembed.store.stats import corpus_stats

    st = open_store(store)
    info = corpus_info(st, "ge")
    res = search(st, "ge", "gratitude", k=15, length_adjust=True)
    sel = select_features(st, "gratitude", info["sae"], k=100, method="auto", info=info).head(100)
    p90 = dict(corpus_stats(st, info, ["p90"], sel["feature_id"].to_list()).iter_rows())
    scale = {f: w / p90[f] for f, w in zip(sel["feature_id"].to_list(), rank_weights(sel.height, TEMPERATURE))
             if f in p90}
    x, ids = st.embeddings("ge")
    labels = dict(st.features(info["sae"]).select("feature_id", "label").iter_rows())
    cols = np.array([scale.get(f, 0.0) for f in range(x.shape[1])])
    latent_score = np.asarray(x @ cols).ravel()
    n_tokens = st.documents("ge").sort("doc_id")["n_tokens"].to_numpy()
    slope, icpt = np.polyfit(np.log1p(n_tokens), latent_score, 1)
    for r in res.iter_rows(named=True):
        i = int(np.searchsorted(ids, r["doc_id"]))
        row = x[i]
        every = sorted(((float(v) * scale[int(f)], int(f)) for f, v in zip(row.indices, row.data) if int(f) in scale),
                       key=lambda c: (-c[0], c[1]))
        assert sum(c for c, _ in every) == pytest.approx(r["sae_score"], rel=1e-5)
        assert r["length_baseline"] == pytest.approx(slope * np.log1p(n_tokens[i]) + icpt, rel=1e-4, abs=1e-6)
        assert r["score"] == pytest.approx(r["sae_score"] - r["length_baseline"])
        listed = r["contributions"]
        assert [c["feature_id"] for c in listed] == [f for _, f in every[:len(listed)]]
        assert [c["contribution"] for c in listed] == pytest.approx([c for c, _ in every[:len(listed)]], rel=1e-5)
        explained = sum(c["contribution"] for c in listed)
        assert explained >= EXPLAIN_SHARE * r["sae_score"] * (1 - 1e-9) or len(listed) == EXPLAIN_MAX
        # the fewest that reach the share: without the last one listed, they would not
        assert len(listed) == 1 or explained - listed[-1]["contribution"] < EXPLAIN_SHARE * r["sae_score"]
        assert r["top_feature"] == listed[0]["feature_id"] and r["top_label"] == labels.get(r["top_feature"])
        assert [c["label"] for c in listed] == [labels.get(c["feature_id"]) for c in listed]
        first = listed[0]
        assert r["explanation"].startswith(f"{first['contribution'] / r['sae_score']:.0%} {first['feature_id']} ")
    # the ranking is by the adjusted score; without the adjustment, by the latent score
    assert res["score"].is_sorted(descending=True)
    raw = search(st, "ge", "gratitude", k=15)
    assert raw["score"].is_sorted(descending=True) and "length_baseline" not in raw.columns
    # hybrid: the explanation is of the SAE part of the fused score
    hyb = search(st, "ge", "gratitude", k=5, mode="hybrid")
    for r in hyb.filter(pl.col("sae_score").is_not_null()).iter_rows(named=True):
        assert r["contributions"][0]["contribution"] <= r["sae_score"] + 1e-9


def test_search_by_example_and_dense_find_planted_rows(store: Path) -> None:
    st = open_store(store)
    ex = search(st, "planted", "The submarine captain ordered the torpedoes loaded at dawn.", k=10, mode="example")
    assert (ex["row_idx"] < N_PLANTED).all()
    dense = search(st, "planted", "submarine torpedoes", k=10, mode="dense")
    assert (dense["row_idx"] < N_PLANTED).all()
    assert dense["score"].is_sorted(descending=True)
    again = search(st, "planted", "submarine torpedoes", k=10, mode="dense")  # served from the sidecar cache
    assert again.equals(dense)
    assert (Path(str(store) + ".dense") / "planted.parquet").exists()
    with pytest.raises(UserError, match="empty"):
        search(st, "ge", "  ")
    with pytest.raises(UserError, match="unknown mode"):
        search(st, "ge", "x", mode="magic")


# ---------------------------------------------------------------------------------------- CLI --
def _cli(args: list[str]) -> tuple[int, str, str]:
    out = CliRunner().invoke(main, args)
    return out.exit_code, out.stdout, out.stderr


def test_cli_outputs_tables_csv_json_and_errors(store: Path, tmp_path: Path) -> None:
    s = ["--store", str(store)]
    code, out, err = _cli(["diff", *s, "planted", "ge", "--top", "3", "--format", "json"])
    assert code == 0, err
    rows = json.loads(out)
    assert rows and {"feature_id", "freq_target", "freq_other", "diff", "q_value", "examples_target"} <= set(rows[0])
    code, out, err = _cli(["diff", *s, "planted", "ge", "--top", "2", "--target", "planted", "--examples", "1"])
    assert code == 0, err
    assert "feature_id" in out.splitlines()[0] and "<<" in out and "[+planted]" in out
    code, out, err = _cli(["correlate", *s, "ge", "--top", "5", "--format", "csv"])
    assert code == 0, err
    header = out.splitlines()[0].split(",")
    assert header[:2] == ["feature_a", "label_a"] and len(out.splitlines()) == 6
    feats = ",".join(map(str, _planted_latents(store, 5)))
    code, out, err = _cli(["cluster", *s, "planted", "--features", feats, "--k", "2", "--format", "json"])
    assert code == 0, err
    clusters = json.loads(out)
    assert sum(c["size"] for c in clusters) == 80 and all("central_docs" in c for c in clusters)
    code, out, err = _cli(["cluster", *s, "planted", "--features", feats, "--k", "2", "--per-document",
                           "--format", "parquet", "--output", str(tmp_path / "c.parquet")])
    assert code == 0, err
    assert pl.read_parquet(tmp_path / "c.parquet").height == 80
    code, out, err = _cli(["search", *s, "planted", "submarine torpedoes", "--mode", "dense", "--k", "3",
                           "--format", "json"])
    assert code == 0, err
    assert [r["rank"] for r in json.loads(out)] == [1, 2, 3] and "doc_id" in json.loads(out)[0]
    code, out, err = _cli(["search", *s, "ge", "gratitude", "--k", "3"])
    assert code == 0, err
    assert out.splitlines()[0].split()[:4] == ["rank", "doc_id", "row_idx", "score"]
    # bad input: one line, exit 2
    for args, msg in ((["diff", *s, "ge", "other_sae"], "different SAEs"),
                      (["diff", *s, "ge", "nope"], "no corpus named"),
                      (["cluster", *s, "ge", "--features", "x"], "comma-separated"),
                      (["cluster", *s, "ge", "--query", " , "], "query is empty")):
        code, out, err = _cli(args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (args, err)


def test_search_without_labels_says_what_to_do(store: Path, tmp_path: Path, test_sae_spec: str) -> None:
    """An SAE without labels cannot select latents by label; the error says so and what to do, while
    descriptor selection (the default on a corpus this size) needs no labels."""
    dst = tmp_path / "nolabels.duckdb"
    shutil.copy(store, dst)
    import duckdb

    con = duckdb.connect(str(dst))
    con.execute("DELETE FROM features")
    con.close()
    with pytest.raises(UserError, match="no labels.*--mode example"):
        search(dst, "ge", "gratitude", select="labels")
    with pytest.raises(UserError, match="no labels.*--features"):
        cluster(dst, "ge", query="gratitude", select="labels")
    # descriptors come from the corpus' own documents, so selection by meaning still works without labels
    assert search(dst, "ge", "gratitude").height > 0
    unlabelled = cluster(dst, "ge", query="gratitude", k=2)
    assert unlabelled.filter(pl.col("cluster") >= 0).height == 2 and unlabelled["selection"][0] == "descriptors"


def test_queries_are_named_documented_and_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = sorted((REPO / "queries").glob("*.sql"))
    assert files
    for f in files:
        text = f.read_text()
        assert text.startswith(f"-- name: {f.stem}\n"), f
        assert "Parameters:" in text, f
        assert load_query(f.stem) == text
    monkeypatch.setenv("SAEEMBED_QUERIES", str(tmp_path))
    (tmp_path / "feature_doc_counts.sql").write_text("SELECT 1")
    assert query_dirs()[0] == tmp_path and load_query("feature_doc_counts") == "SELECT 1"
    with pytest.raises(UserError, match="no_such_query.sql"):
        load_query("no_such_query")


# ------------------------------------------------------------------- LLM hypotheses (diff) -----
def test_diff_hypotheses_against_a_local_llm_server(store: Path, tmp_path: Path) -> None:
    """The LLM step end to end over real HTTP (SmolLM2 behind tests/llm_server.py): contrastive
    relabels, a summary into <= N hypotheses, and a judge verifying each on held-out documents.
    A 135M model writes poor hypotheses, so this checks the plumbing and the bookkeeping of the
    verification, not the wording."""
    from saeembed.analysis.hypotheses import diff_hypotheses, parse_hypotheses
    from saeembed.llm import make_llm
    from tests.llm_server import ChatServer

    assert parse_hypotheses("Sure!\n- Texts mention boats [1, 3]\n2. Texts are short [9]\n- x", 3, 5) == [
        ("Texts mention boats", [0, 2]), ("Texts are short", [])]
    res = diff(store, ["planted", "ge"], target="planted", top=5, examples=2)
    with ChatServer(max_new_tokens=16) as srv:
        llm = make_llm("openai", "smollm2-test", base_url=srv.base_url, api_key="test",
                       cache=tmp_path / "llm.sqlite", workers=2)
        try:
            hyp = diff_hypotheses(store, res, llm, n_latents=1, n_hypotheses=1, n_examples=2, n_verify=6)
            calls = llm.usage.calls
            again = diff_hypotheses(store, res, llm, n_latents=1, n_hypotheses=1, n_examples=2, n_verify=6)
        finally:
            llm.close()
        assert srv.requests == calls  # the second run was served from the cache
    assert hyp.height == 1 and hyp.equals(again)
    assert (hyp["target"] == "planted").all() and (hyp["other"] == "ge").all()
    assert (hyp["n_target"] == 6).all() and (hyp["n_other"] == 6).all()
    for r in hyp.iter_rows(named=True):
        assert 0 <= r["freq_target"] <= 1 and 0 <= r["freq_other"] <= 1 and r["hypothesis"]
        assert r["diff"] == pytest.approx(r["freq_target"] - r["freq_other"])
        assert set(r["features"]) <= set(res["feature_id"].head(1).to_list())
        assert r["verified"] == (r["diff"] > 0 and r["p_value"] < 0.05)
    with pytest.raises(UserError, match="between 1 and 10"):
        diff_hypotheses(store, res, llm, n_hypotheses=11)
