"""Highlights from the store: the position of each non-zero's strongest token kept at encode marks the
same token the reader's recomputation finds, at the same character, on real text; views need no
forward; a store without positions falls back to the reader and says so once."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

import saeembed
import saeembed.analysis
from saeembed.encode import encode_corpus
from saeembed.highlight.recompute import token_activations
from saeembed.highlight.snippets import highlighted_examples
from saeembed.highlight.stored import marked_text, read_peaks
from saeembed.highlight.views import Highlighter
from tests.conftest import GOEMOTIONS_SAMPLE, REPO


def _pairs(store: Path, corpus: str, docs: int, per_doc: int) -> list[tuple[int, int]]:
    """Each of the first ``docs`` documents with its ``per_doc`` strongest latents and as many weak ones."""
    st = saeembed.open_store(store)
    cid = st.corpus(corpus)["corpus_id"]
    acts = st.sql("""SELECT doc_id, feature_id, value FROM activations WHERE doc_id >> 32 = ?
                     AND (doc_id & 4294967295) < ? ORDER BY doc_id, value DESC, feature_id""", [cid, docs])
    out = []
    for _, grp in acts.group_by("doc_id", maintain_order=True):
        rows = list(grp.select("doc_id", "feature_id").iter_rows())
        out += rows[:per_doc] + rows[-per_doc:]
    return out


def _check_against_reader(store: Path, pairs: list[tuple[int, int]]) -> tuple[int, int]:
    """(pairs compared, pairs whose stored peak is not the reader's first maximum but a tie with it)."""
    st = saeembed.open_store(store)
    peaks = read_peaks(st, pairs)
    toks = token_activations(st, sorted({d for d, _ in pairs}), sorted({f for _, f in pairs}))
    by = {k: g.sort("position") for k, g in toks.group_by("doc_id", "feature_id")}
    ties = 0
    for (d, f), p in peaks.items():
        g = by[(d, f)]
        acts = g["activation"].to_numpy()
        tokens = g["token"].to_list()
        assert "".join(tokens) == p.text  # the reader's tokens tile the stored text
        assert p.value > 0 and p.n_active == int((acts > 0).sum())
        top = int(np.argmax(acts))
        if p.peak_pos != top:  # float noise between batchings may reorder exact ties only
            assert acts[p.peak_pos] >= acts[top] * (1 - 1e-4), (d, f, p.peak_pos, top, acts[p.peak_pos], acts[top])
            ties += 1
            continue
        start = sum(len(t) for t in tokens[:top])
        assert p.peak == (start, start + len(tokens[top]))
        # the snippet marks the strongest token at the character where the reader's own tokens put it
        lead = len(tokens[top]) - len(tokens[top].lstrip())
        if tokens[top]:
            assert marked_text(p).index("<<") == start + (lead if tokens[top].strip() else 0)
    return len(peaks), ties


def test_positions_are_the_readers_strongest_tokens(tiny_llama, tmp_path):
    """Long documents cut into several windows, a ReLU and a TopK SAE: the stored positions count
    pooled tokens across windows exactly as the reader's recomputation does."""
    from tests.conftest import make_random_sae

    texts = pl.read_parquet(GOEMOTIONS_SAMPLE).head(30)["text"].to_list()
    texts += [" ".join(texts[i:i + 6]) for i in range(0, 24, 6)]  # several windows of 48 tokens each
    for activation, k in (("relu", None), ("topk", 6)):
        sae = make_random_sae(tmp_path / activation, d_in=32, d_sae=96, layer=2, model_name=str(tiny_llama),
                              activation=activation, k=k)
        store = tmp_path / f"{activation}.duckdb"
        encode_corpus(store, texts, "t", reader=str(tiny_llama), sae=str(sae), window=48, batch_tokens=256,
                      progress=False)
        n, ties = _check_against_reader(store, _pairs(store, "t", 34, 4))
        assert n > 150 and ties <= n // 100


@pytest.mark.slow
def test_snippets_mark_the_readers_strongest_token_on_real_text(real_store):
    """GoEmotions comments and Amazon reviews (where ../shared has them) encoded with the shipped
    reader and SAE: the stored peak is the token the reader recomputes as the strongest."""
    names = saeembed.open_store(real_store).corpora()["name"].to_list()
    total = ties = 0
    for corpus in names:
        n, t = _check_against_reader(real_store, _pairs(real_store, corpus, 25, 3))
        total, ties = total + n, ties + t
    assert total >= 140 and ties <= total // 100


@pytest.fixture
def tiny_store(tiny_llama, tiny_sae, tmp_path) -> Path:
    """Corpora g and h: 40 GoEmotions comments each, on the tiny reader and SAE."""
    store = tmp_path / "s.duckdb"
    texts = pl.read_parquet(GOEMOTIONS_SAMPLE).select("text")
    for name, part in (("g", texts.head(40)), ("h", texts.slice(40, 40))):
        encode_corpus(store, part, name, reader=str(tiny_llama), sae=str(tiny_sae), progress=False)
    return store


def _without_positions(store: Path, copy: Path) -> Path:
    """The store as an older saeembed wrote it: no position columns, no flag."""
    shutil.copy(store, copy)
    con = duckdb.connect(str(copy))
    for table, col in (("activations", "peak_pos"), ("documents", "token_ends")):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
    con.execute("UPDATE corpora SET config = json_remove(config, '$.token_positions')")
    con.execute("CHECKPOINT")
    con.close()
    return copy


def test_old_store_falls_back_to_the_reader_and_says_so_once(tiny_store, tiny_llama, tiny_sae, tmp_path, caplog):
    old = _without_positions(tiny_store, tmp_path / "old.duckdb")
    pairs = _pairs(tiny_store, "g", 10, 2)
    new = highlighted_examples(saeembed.open_store(tiny_store), pairs, 400)
    reader = highlighted_examples(saeembed.open_store(tiny_store), pairs, 400, shade=True)
    with caplog.at_level(logging.WARNING, logger="saeembed"):
        st = saeembed.open_store(old)
        first = highlighted_examples(st, pairs, 400)
        again = highlighted_examples(st, pairs, 400)
    assert first == again == reader  # the reader path, every firing run marked
    notes = [r.getMessage() for r in caplog.records if "without token positions" in r.getMessage()]
    assert len(notes) == 1 and "'g'" in notes[0] and "re-encode" in notes[0]
    # the store's snippet marks one token, inside a run the reader marks
    for k, text in new.items():
        assert text.count("<<") == 1
        assert text.replace("<<", "").replace(">>", "") == reader[k].replace("<<", "").replace(">>", "")
    # writing to an old store adds the columns; its old corpus keeps the reader path
    st.close()
    encode_corpus(old, pl.read_parquet(GOEMOTIONS_SAMPLE).slice(80, 10).select("text"), "later",
                  reader=str(tiny_llama), sae=str(tiny_sae), progress=False)
    st2 = saeembed.open_store(old)
    assert highlighted_examples(st2, pairs, 400) == reader
    later = st2.corpus("later")
    assert json.loads(later["config"])["token_positions"] is True
    assert st2.sql("SELECT count(*) AS n FROM activations WHERE doc_id >> 32 = ? AND peak_pos IS NULL",
                   [later["corpus_id"]])["n"][0] == 0


def test_views_read_the_store_and_shade_reruns_the_reader(tiny_store):
    st = saeembed.open_store(tiny_store)
    pairs = _pairs(tiny_store, "g", 6, 1)
    docs, feats = [d for d, _ in pairs], [f for _, f in pairs]
    plain = Highlighter(st, docs, feats)
    assert plain.tokens is None  # nothing recomputed
    shaded = Highlighter(st, docs, feats, shade=True)
    assert shaded.tokens is not None and shaded.tokens.height > 0
    for d, f in pairs:
        v = plain.view(d, [f])
        strongest = [s for s in v.segments if s.values[0] > 0]
        assert len(strongest) == 1 and strongest[0].strengths[0] > 0
        peak = read_peaks(st, [(d, f)])[(d, f)]
        assert strongest[0].text == peak.text[peak.peak[0]:peak.peak[1]].lstrip()
        marked = {s.text.strip() for s in shaded.view(d, [f]).segments if s.values[0] > 0}
        assert strongest[0].text.strip() in marked


@pytest.mark.slow  # a process per view: seconds each on 2 cores
def test_a_table_or_json_view_never_loads_the_reader(tiny_store):
    """Commands that read the store (tables with snippets included) import no torch at all."""
    code = ("import sys; from saeembed.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    s = ["--store", str(tiny_store)]
    search = ["search", "g", "gratitude, thanks", "--select", "descriptors"]
    saeembed.analysis.search(tiny_store, "g", "gratitude, thanks", select="descriptors")  # caches descriptors
    for args in (["diff", "g", "h", "--min-diff", "0", "--fdr", "1"], ["diff", "g", "h", "--format", "json"],
                 ["diff", "g", "h", "--examples", "2", "--format", "html", "--output", str(tiny_store) + ".html"],
                 ["cluster", "g", "--unfiltered", "--k", "2"], search, [*search, "--format", "json"]):
        run = subprocess.run([sys.executable, "-c", code, *args, *s], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
        assert run.returncode == 0, (args, run.stderr[-800:])
