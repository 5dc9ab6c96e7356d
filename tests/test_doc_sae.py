"""The document-level SAE (``--sae doc``): shipped files, the MiniLM document reader, and the real
encode → store → cluster/search path on real comments (datasets/goemotions, Apache-2.0)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner

import saeembed
from saeembed.cli import main
from saeembed.ids import row_of
from saeembed.labelrule import shown_labels
from tests.conftest import GOEMOTIONS_SAMPLE, check_shipped_labels

N_DOCS = 300


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def doc_reader():
    from saeembed.reader import make_reader

    # one thread for this module only: a thread count left changed would alter later tests' fp32
    # results in the last bits (test_encode compares an in-process encode with a subprocess' bit for bit)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_reader("minilm-doc", layer=None, device="cpu")
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def ge_docs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ge_doc") / "ge.parquet"
    pl.read_parquet(GOEMOTIONS_SAMPLE).head(N_DOCS).select("id", "text", "emo_gratitude").write_parquet(path)
    return path


@pytest.fixture(scope="module")
def doc_store(tmp_path_factory, ge_docs, doc_reader) -> Path:
    store = tmp_path_factory.mktemp("doc_store") / "s.duckdb"
    code, out, err = cli("encode", str(ge_docs), "--store", str(store), "--name", "ge", "--sae", "doc",
                         "--format", "json", "--quiet")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["n_docs"] == N_DOCS
    return store


def test_shipped_doc_sae_loads_with_its_reader_hook_and_labels():
    from saeembed.reader import DOC_READER
    from saeembed.sae import open_sae
    from saeembed.sae.resolve import DOC_SAE_DIR

    loaded = open_sae("doc")
    sae, cfg = loaded.sae, loaded.sae.cfg
    assert loaded.sae_id.startswith("doc@") and loaded.path == DOC_SAE_DIR
    assert cfg.model_name == DOC_READER and cfg.hook_layer == 5 and cfg.hook_name.endswith("doc_mean")
    assert cfg.d_in == 384 and cfg.activation == "topk" and 4 <= cfg.k <= 16
    assert sae.W_enc.shape == (384, cfg.d_sae) and sae.W_dec.shape == (cfg.d_sae, 384)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(cfg.d_sae), atol=1e-2)  # unit decoder rows
    assert loaded.labels is not None
    check_shipped_labels(loaded.labels, cfg.d_sae)
    assert (shown_labels(loaded.labels, contexts=False)["label"] != "(dead)").mean() > 0.9
    size = sum(p.stat().st_size for p in DOC_SAE_DIR.iterdir())
    assert size < 4 * 2**20, f"shipped doc SAE is {size / 2**20:.1f} MiB"
    recipe = (DOC_SAE_DIR / "RECIPE.md").read_text()
    metrics = cfg.extra["saeembed"]["metrics"]["heldout"]
    assert f"{metrics['fvu']:.4f}" in recipe and metrics["fvu"] < 0.6 and metrics["dead_frac"] < 0.05


def test_doc_reader_gives_the_dense_embedding_and_averages_long_documents(doc_reader):
    from saeembed.embed import get_embedder
    from saeembed.reader import batches_by_budget, pad_batch

    texts = pl.read_parquet(GOEMOTIONS_SAMPLE)["text"].head(20).to_list()
    long_text = " ".join(texts) * 3  # > 254 tokens: several chunks
    docs = [*texts, long_text]
    wins = [w for i, t in enumerate(docs) for w in doc_reader.windows(t, i)]
    assert len(wins) == len(docs) and all(w.n_pooled == 1 for w in wins)
    got = np.zeros((len(docs), 384), np.float32)
    for batch in batches_by_budget(wins, 4096):
        ids, attn, pool = pad_batch(batch, doc_reader.pad_id)
        hidden = doc_reader.hidden_states(ids, attn)
        for j, w in enumerate(batch):
            got[w.doc] = hidden[j][pool[j]][0].numpy()
    ref = get_embedder().embed(docs)
    assert np.abs(got[:-1] - ref[:-1]).max() < 1e-5  # short documents: exactly the dense baseline's vector
    assert abs(np.linalg.norm(got[-1]) - 1) < 1e-5
    assert len(wins[-1].ids) > 254 and np.abs(got[-1] - ref[-1]).max() > 1e-3  # not the truncated vector


def test_encode_with_doc_sae_stores_the_sae_code_of_each_document(doc_store, ge_docs):
    from saeembed.embed import get_embedder
    from saeembed.reader import DOC_READER
    from saeembed.sae import open_sae

    s = saeembed.open_store(doc_store)
    info = s.corpora().row(0, named=True)
    assert info["reader"] == DOC_READER and info["sae"].startswith("doc@") and info["layer"] == 5
    mat, doc_ids = s.embeddings("ge")
    sae = open_sae("doc").sae
    assert mat.shape == (N_DOCS, sae.d_sae)
    per_doc = np.diff(mat.indptr)
    assert per_doc.min() >= 1 and per_doc.max() <= sae.cfg.k
    texts = s.documents("ge").sort("doc_id")["text"].to_list()
    with torch.no_grad():
        want = sae.encode(torch.from_numpy(get_embedder().embed(texts))).numpy()
    assert np.abs(mat.toarray() - want).max() < 1e-3
    # every shipped row lands in the store; analyses see one label per latent
    n_rows = s.sql("SELECT count(*) AS n FROM features WHERE sae = ?", [info["sae"]])["n"][0]
    assert n_rows == open_sae("doc").labels.height
    assert s.features(info["sae"])["feature_id"].to_list() == list(range(sae.d_sae))
    s.close()


def test_highlighting_a_doc_latent_shades_the_whole_original_text(doc_store):
    """A document-level latent has no token positions: every word of the text, as written (not
    MiniLM's lower-cased word pieces), carries the document's value."""
    from saeembed.highlight.recompute import token_activations

    s = saeembed.open_store(doc_store)
    docs = s.documents("ge").sort("doc_id").head(3)
    mat, doc_ids = s.embeddings("ge")
    rows = []
    for d in docs["doc_id"].to_list():
        r = int(np.flatnonzero(doc_ids == d)[0])
        row = mat.getrow(r)
        rows.append((d, int(row.indices[np.argmax(row.data)]), float(row.data.max())))
    acts = token_activations(s, [d for d, _, _ in rows], [f for _, f, _ in rows])
    for (d, f, value), text in zip(rows, docs["text"].to_list()):
        got = acts.filter((pl.col("doc_id") == d) & (pl.col("feature_id") == f)).sort("position")
        assert "".join(got["token"].to_list()) == text and got.height >= len(text.split())
        assert np.allclose(got["activation"].to_numpy(), value, atol=1e-3)
    s.close()


def test_cluster_and_search_run_on_the_doc_sae_and_find_gratitude(doc_store, ge_docs):
    code, out, err = cli("cluster", "ge", "--store", str(doc_store), "--query", "thanks, gratitude", "--k", "2",
                         "--format", "json")
    assert code == 0, err
    clusters = json.loads(out)
    assert sum(c["size"] for c in clusters) == N_DOCS
    assert 1 <= clusters[0]["n_features"] < open_sae_width()
    code, out, err = cli("search", "ge", "comments expressing gratitude or thanks", "--store", str(doc_store),
                         "--top", "20", "--format", "json")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 20
    truth = pl.read_parquet(ge_docs)["emo_gratitude"].to_numpy()
    rows = [row_of(int(h["doc_id"])) for h in hits]
    base = truth.mean()
    assert truth[rows].mean() > 3 * base, (truth[rows].mean(), base)


def open_sae_width() -> int:
    from saeembed.sae import open_sae

    return open_sae("doc").sae.d_sae


def test_train_sae_cli_trains_and_labels_a_doc_level_sae(tmp_path, ge_docs):
    from saeembed.sae import open_sae

    out = tmp_path / "my_doc_sae"
    code, stdout, err = cli("train-sae", "--corpus", f"{ge_docs}:text", "--reader", "minilm-doc", "--d-sae", "32",
                            "--k", "4", "--steps", "40", "--batch-size", "64", "--heldout", "0.1", "--threads", "1",
                            "--out", str(out), "--format", "json")
    assert code == 0, err
    row = json.loads(stdout)
    assert row["layer"] == 5 and row["tokens"] == N_DOCS  # one cached vector per document
    loaded = open_sae(str(out))
    assert loaded.sae.cfg.model_name.endswith("#doc") and loaded.labels.height == 32
    live = loaded.labels.filter(pl.col("label") != "(dead)")
    assert live.height > 16 and live["description"].str.contains("documents where the latent is largest").all()


def test_python_api_encodes_with_the_doc_sae(tmp_path):
    texts = pl.read_parquet(GOEMOTIONS_SAMPLE)["text"].head(30).to_list()
    st = saeembed.open_store(tmp_path / "api.duckdb")
    row = st.encode(texts, "ge30", sae="doc", progress=False)
    assert row["n_docs"][0] == 30 and row["sae"][0].startswith("doc@")
    mat, _ = st.embeddings("ge30")
    assert mat.shape[0] == 30 and np.diff(mat.indptr).min() >= 1
    st.close()
