"""Label quality scores (detection AUC), which label analyses show, readable offline labels, and search
explanations.

The scoring is judged against nulls where the truth is known: a latent's own label must beat the
label of another latent on the same windows, and labels handed to random latents must score about
0.5. The store tests use the session's real store (400 GoEmotions comments, shipped reader and SAE).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from saeembed.api import open_store
from saeembed.cli import main
from saeembed.errors import UserError
from saeembed.labelrule import shown_labels
from saeembed.labels import write_labels
from saeembed.labels.contexts import TokenCodes, draw_contexts
from saeembed.labels.readable import phrase_candidates
from saeembed.labels.score import FLOOR, auc
from saeembed.labels.search import embed_labels, label_vectors
from saeembed.store import CONTEXT_LABEL_SOURCE


def test_auc_is_the_mann_whitney_statistic() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.5, 1, 40), rng.normal(0, 1, 300)
    pos[:5] = neg[:5]  # ties count half
    want = roc_auc_score(np.r_[np.ones(40), np.zeros(300)], np.r_[pos, neg])
    assert auc(pos, neg) == pytest.approx(want)


def _toy_codes() -> tuple[TokenCodes, dict[int, str]]:
    """Six documents of eight words; latent 0 fires on "here" after "sure ," in four of them."""
    vocab = ["sure", ",", "here", "are", "three", "ideas", "the", "cat", "sat", "on", "mat", "we", "go"]
    docs = [["sure", ",", "here", "are", "three", "ideas", "we", "go"]] * 4 + [["the", "cat", "sat", "on", "the",
                                                                                  "mat", "we", "go"]] * 2
    tok = np.array([vocab.index(w) for d in docs for w in d], np.int32)
    doc = np.repeat(np.arange(len(docs)), 8).astype(np.int32)
    fires = np.flatnonzero(tok == vocab.index("here"))
    codes = TokenCodes(tok, doc, np.zeros(len(fires), np.int32), fires.astype(np.int64),
                       np.linspace(1, 2, len(fires)).astype(np.float32), d_sae=2)
    return codes, dict(enumerate(vocab))


def test_contexts_split_documents_and_phrase_is_the_shared_words() -> None:
    codes, vocab = _toy_codes()
    ctx = draw_contexts(codes, lambda ids: "".join((" " if vocab[i] != "," else "") + vocab[i] for i in ids),
                        n_explain=2)
    explain_docs = set(codes.doc[ctx.explain[0]].tolist())
    assert len(explain_docs) == 2
    select, _ = ctx.heldout(0, "select")
    score, _ = ctx.heldout(0, "score")
    # held-out windows come from other documents than the explain ones, and the halves share none
    assert not (set(codes.doc[select]) | set(codes.doc[score])) & explain_docs
    assert not set(codes.doc[select]) & set(codes.doc[score])
    assert "sure, here" in phrase_candidates(ctx, 0, n=3)
    shown = ctx.shown_context(0)
    assert "<<here>>" in shown and shown.endswith("…")
    assert 1 not in ctx.explain  # latent 1 never fires: nothing to write a label from


def _copy(store: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store.duckdb"
    shutil.copy(store, dst)
    return dst


def test_shown_label_is_the_best_scoring_one_else_the_context(real_store: Path, tmp_path: Path) -> None:
    import duckdb

    store = _copy(real_store, tmp_path)
    con = duckdb.connect(str(store))
    sae = con.execute("SELECT sae FROM saes").fetchall()[0][0]
    con.execute("DELETE FROM features")
    con.close()
    write_labels(store, sae, pl.DataFrame({
        "feature_id": [1, 1, 2, 2, 3, 3, 4],
        "label": ["good label", "better label", "weak label", "…the <<cat>> sat…", "unscored import", "…<<x>>…",
                  "weak only"],
        "label_source": ["a", "b", "a", CONTEXT_LABEL_SOURCE, "c", CONTEXT_LABEL_SOURCE, "a"],
        "score": [FLOOR + 0.05, FLOOR + 0.1, FLOOR - 0.2, None, None, None, FLOOR - 0.3]}))
    with open_store(store) as st:
        shown = dict(st.features(sae).select("feature_id", "label").iter_rows())
        no_ctx = dict(st.features(sae, contexts=False).select("feature_id", "label").iter_rows())
        rows = st.sql("SELECT feature_id, label, label_source, score FROM features ORDER BY label DESC")
        ids, vectors = label_vectors(st, sae)  # what correlate compares: labels, never a context
    # above the floor: the best score; an unmeasured label before a context; a context before a
    # label measured below the floor; a label below the floor only where nothing else exists
    assert shown == {1: "better label", 2: "…the <<cat>> sat…", 3: "unscored import", 4: "weak only"}
    assert no_ctx[2] == "weak label"
    # the same rule on a frame (a shipped labels.parquet: SAEEncoder names, export-sae)
    assert dict(shown_labels(rows).select("feature_id", "label").iter_rows()) == shown
    assert dict(shown_labels(rows, contexts=False).select("feature_id", "label").iter_rows()) == no_ctx
    want = embed_labels([no_ctx[f] for f in (1, 2, 3, 4)])
    assert ids.tolist() == [1, 2, 3, 4] and np.abs(vectors - want).max() < 0.01


@pytest.mark.slow
def test_scores_separate_a_latents_own_label_from_another_latents(real_store: Path, tmp_path: Path) -> None:
    """On the same windows, each latent's shipped label must score above the label of a random other
    latent (the null: about 0.5), and the scores land in the store with a context from the corpus."""
    from saeembed.labels.measure import score_store_labels

    store = _copy(real_store, tmp_path)
    with open_store(store) as st:
        sae = st.sql("SELECT sae FROM saes").item()
        # the shipped label of each latent: c-TF-IDF or the readable one that replaced it (one per latent)
        shipped = st.sql(f"SELECT feature_id, label, label_source FROM features WHERE label_source != "
                         f"'{CONTEXT_LABEL_SOURCE}' AND label != '(dead)' ORDER BY feature_id")
    if shipped.height == 0:
        pytest.skip("the test SAE ships no labels")
    rng = np.random.default_rng(0)
    assert shipped["feature_id"].is_unique().all()
    shuffled = shipped.with_columns(pl.Series("label", shipped["label"].to_numpy()[rng.permutation(shipped.height)]),
                                    pl.lit("test:shuffled").alias("label_source"))
    write_labels(store, sae, shuffled)
    summary = score_store_labels(store, "ge", max_docs=200, max_tokens=4000)
    by = {r["label_source"]: r for r in summary.to_dicts()}
    assert sum(r["scored"] for s, r in by.items() if s != "test:shuffled") > 300
    with open_store(store) as st:
        scores = st.sql(f"SELECT feature_id, label_source = 'test:shuffled' AS null_label, score FROM features "
                        f"WHERE score IS NOT NULL AND label_source != '{CONTEXT_LABEL_SOURCE}'").pivot(
            on="null_label", index="feature_id", values="score").drop_nulls()
        contexts = st.sql(f"SELECT description FROM features WHERE label_source = '{CONTEXT_LABEL_SOURCE}'")
    own, other = scores["false"].to_numpy(), scores["true"].to_numpy()
    assert abs(float(np.median(other)) - 0.5) < 0.05  # the null
    assert float(np.mean(own > other)) > 0.6 and float(np.median(own)) > float(np.median(other)) + 0.05
    # the contexts shown are this corpus' strongest windows, not the training mix's
    assert (contexts["description"] == "strongest context in corpus 'ge'").sum() > 300


def test_label_score_command_refuses_unknown_corpus_in_one_line(real_store: Path, tmp_path: Path) -> None:
    store = _copy(real_store, tmp_path)
    out = CliRunner().invoke(main, ["labels", "score", "nope", "--store", str(store)])
    assert out.exit_code == 2 and out.output.count("\n") == 1 and "nope" in out.output
    bad = tmp_path / "l.json"
    bad.write_text(json.dumps({"1": "x"}))
    out = CliRunner().invoke(main, ["labels", "import", str(bad), "--store", str(store), "--score", "nope"])
    assert out.exit_code == 2 and "nope" in out.output
    with open_store(store) as st:
        assert st.sql("SELECT count(*) FROM features WHERE label_source = 'json:l'").item() == 0
    with pytest.raises(UserError, match="no labels from source"):
        from saeembed.labels.measure import score_store_labels

        score_store_labels(store, "ge", sources=["nope"])


def test_feature_search_and_browser_list_labels_by_score(real_store: Path, tmp_path: Path) -> None:
    """``features --search`` ranks latents by how well their label matches the query and reports each
    label's detection score; the browser's latent list puts the best-scoring shown label first and the
    latents showing a context or an unmeasured label last."""
    import re

    import duckdb

    from saeembed.browse.app import create_app

    store = _copy(real_store, tmp_path)
    con = duckdb.connect(str(store))
    sae = con.execute("SELECT sae FROM saes").fetchall()[0][0]
    con.execute("DELETE FROM features")
    con.close()
    written = pl.DataFrame({
        "feature_id": [1, 2, 2, 3, 4, 5],
        "label": ["apologies and saying sorry", "sports teams", "…the <<match>> ended…", "cooking recipes",
                  "questions about money", "numbers and dates"],
        "label_source": ["a", "a", CONTEXT_LABEL_SOURCE, "a", "b", "a"],
        "score": [FLOOR + 0.2, FLOOR - 0.2, None, FLOOR + 0.05, None, FLOOR - 0.1]})
    write_labels(store, sae, written)
    out = CliRunner().invoke(main, ["features", "--search", "saying sorry", "--store", str(store), "--format", "json"])
    assert out.exit_code == 0, out.output
    hits = json.loads(out.stdout)
    assert hits[0]["feature_id"] == 1
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    stored = {(r["feature_id"], r["label"]): r["score"] for r in written.to_dicts()}
    assert all(h["label_score"] == pytest.approx(stored[(h["feature_id"], h["label"])]) for h in hits
               if stored[(h["feature_id"], h["label"])] is not None)
    assert all(h["label_source"] != CONTEXT_LABEL_SOURCE for h in hits)  # a context is no label to search
    page = create_app(store).test_client().get("/features").get_data(as_text=True)
    listed = [int(m) for m in re.findall(r'href="/latent/(\d+)', page)]
    listed = list(dict.fromkeys(listed))  # each latent links twice (its id and its label)
    # 1 and 3 above the floor, best first; 5 below it (nothing else to show); 2 shows its context, 4 an
    # unmeasured import: unscored, last
    assert listed == [1, 3, 5, 2, 4]
