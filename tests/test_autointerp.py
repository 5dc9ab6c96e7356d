"""LLM labelling end to end against a real OpenAI-compatible server (SmolLM2 on 127.0.0.1), token
highlighting (``show``) checked against the stored max activations, retries and the local backend.

The server (tests/llm_server.py) runs the shipped SmolLM2-135M-Instruct with greedy generation and
few new tokens, so labels are poor but every byte goes through real HTTP and a real model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from saeembed.api import open_store
from saeembed.cli import main
from saeembed.errors import UserError
from saeembed.highlight.recompute import render, token_activations
from saeembed.labels.autointerp import (
    AutoInterpConfig,
    detection_scores,
    label_features,
    parse_detection,
    parse_explanation,
)
from saeembed.llm import LLM, OpenAIChat, make_llm
from tests.llm_server import ChatServer


@pytest.fixture(scope="module")
def server():
    with ChatServer(max_new_tokens=16) as srv:
        yield srv


@pytest.fixture(scope="module")
def store(real_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared store, so labels written here do not leak into other tests."""
    import shutil

    dst = tmp_path_factory.mktemp("autointerp") / "store.duckdb"
    shutil.copy(real_store, dst)
    return dst


def _mid_density_feature(store: Path, corpus: str = "ge") -> int:
    """A latent firing in 5-50% of the corpus: enough positives to sample, negatives to contrast."""
    with open_store(store) as st:
        df = st.sql("""SELECT a.feature_id, count(*) AS n FROM activations a JOIN documents d USING (doc_id)
                       JOIN corpora c USING (corpus_id) WHERE c.name = ? GROUP BY 1
                       ORDER BY abs(count(*) - 0.2 * max(c.n_docs)), feature_id LIMIT 1""", [corpus])
    return int(df["feature_id"][0])


def test_label_cli_end_to_end_then_cached(store: Path, server: ChatServer, tmp_path: Path) -> None:
    fid = _mid_density_feature(store)
    cache = tmp_path / "llm.sqlite"
    args = ["label", "ge", "--store", str(store), "--feature", str(fid), "--base-url", server.base_url,
            "--api-key", "test", "--llm-model", "smollm2-test", "--examples", "4", "--holdout", "3",
            "--cache", str(cache), "--format", "json", "--workers", "2"]
    runner = CliRunner()
    t0 = time.perf_counter()
    out = runner.invoke(main, args)
    first_s = time.perf_counter() - t0
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [r["feature_id"] for r in rows] == [fid]
    assert rows[0]["label"] and 0.0 <= rows[0]["score"] <= 1.0
    assert "LLM usage: 2 calls (0 from cache)" in out.stderr
    requests = server.requests
    with open_store(store) as st:
        stored = st.sql("SELECT * FROM features WHERE label_source = 'llm:smollm2-test'")
    assert stored["feature_id"].to_list() == [fid]
    assert 0.0 <= stored["score"][0] <= 1.0 and stored["label"][0] == rows[0]["label"]
    assert 0.0 < stored["density"][0] < 1.0

    # second run: every completion from the cache, no request, zero new tokens, same label
    out2 = runner.invoke(main, args)
    assert out2.exit_code == 0, out2.output
    assert server.requests == requests
    assert "2 calls (2 from cache), 0 prompt + 0 completion tokens" in out2.stderr
    assert json.loads(out2.stdout) == rows
    print(f"labeller: first run {first_s:.1f} s; {out.stderr.strip().splitlines()[-1]}")


def test_candidates_pick_best_and_python_api(store: Path, server: ChatServer, tmp_path: Path) -> None:
    fid = _mid_density_feature(store, "ge")
    llm = make_llm("openai", "smollm2-test", base_url=server.base_url, api_key="x", cache=tmp_path / "c.sqlite")
    cfg = AutoInterpConfig(n_explain=3, n_holdout=2, n_contrast=1, candidates=2, context_before=12,
                           context_after=4, explain_tokens=16, detect_tokens=8)
    best, allc = label_features(store, "ge", [fid], llm, cfg, write=False)
    assert allc.height == 2 and set(allc["candidate"]) == {0, 1}
    assert best.height == 1 and best["f1"][0] == allc["f1"].max()
    assert allc["n_holdout"][0] == 4  # balanced: 2 activating + 2 not
    assert llm.usage.prompt_tokens > 0 and llm.usage.completion_tokens > 0
    with pytest.raises(UserError, match="outside"):
        label_features(store, "ge", [10**7], llm, cfg)


def test_retry_after_429(server: ChatServer, tmp_path: Path) -> None:
    server.fail_first = server.failed + 1
    before = server.requests
    llm = LLM(OpenAIChat("smollm2-test", server.base_url, "x", backoff=0.01), cache=tmp_path / "c.sqlite")
    c = llm.complete([{"role": "user", "content": "Say hi."}], max_tokens=2)
    assert c.text and c.completion_tokens > 0
    assert server.requests == before + 2 and llm.usage.retries == 1
    # a client error is not retried and names the fix
    bad = LLM(OpenAIChat("m", server.base_url.replace("/v1", "/nope"), "x", backoff=0.01), use_cache=False)
    with pytest.raises(UserError, match="HTTP 404"):
        bad.complete([{"role": "user", "content": "x"}], max_tokens=2)
    dead = LLM(OpenAIChat("m", "http://127.0.0.1:9/v1", "x", backoff=0.01, max_retries=1, timeout=2), use_cache=False)
    with pytest.raises(UserError, match="connection refused"):  # fatal after one quick retry
        dead.complete([{"role": "user", "content": "x"}], max_tokens=2)


def test_show_highlights_and_matches_stored_max(store: Path) -> None:
    with open_store(store) as st:
        top = st.sql("""SELECT a.doc_id, a.feature_id, a.value FROM activations a JOIN documents d USING (doc_id)
                        WHERE d.corpus_id = 1 ORDER BY a.value DESC LIMIT 3""")
        other = st.sql("SELECT doc_id, feature_id, value FROM activations WHERE doc_id >> 32 = 2 "
                       "ORDER BY doc_id, feature_id LIMIT 2")
    pairs = top.vstack(other)
    tokens = token_activations(store, pairs["doc_id"].to_list(), pairs["feature_id"].to_list())
    assert tokens.columns == ["doc_id", "position", "token", "feature_id", "activation"]
    for doc, fid, value in pairs.iter_rows():
        got = tokens.filter((pl.col("doc_id") == doc) & (pl.col("feature_id") == fid))["activation"].max()
        assert got == pytest.approx(value, rel=1e-3)
    doc, fid, _ = top.row(0)
    text = render(tokens, doc, fid)
    fired = tokens.filter((pl.col("doc_id") == doc) & (pl.col("feature_id") == fid) & (pl.col("activation") > 0))
    for tok in fired["token"].to_list():
        assert f"<<{tok.strip()}" in text or tok.strip() in text.split("<<", 1)[1]
    assert render(tokens, doc, fid, style="ansi").count("\x1b[0m") == text.count("<<")

    runner = CliRunner()
    out = runner.invoke(main, ["show", str(doc), "--feature", str(fid), "--store", str(store)])
    assert out.exit_code == 0, out.output
    assert "<<" in out.stdout and ">>" in out.stdout and f"feature {fid}" in out.stdout
    out = runner.invoke(main, ["show", str(doc), "--feature", str(fid), "--store", str(store), "--format", "json"])
    rows = json.loads(out.stdout)
    assert max(r["activation"] for r in rows) == pytest.approx(top["value"][0], rel=1e-3)
    assert "".join(r["token"] for r in rows).strip()
    out = runner.invoke(main, ["show", "12345", "--feature", "1", "--store", str(store)])
    assert out.exit_code == 2 and "no document 12345" in out.output


def test_parsers() -> None:
    assert parse_explanation("Label: saying sorry\nDescription: Apologies.") == ("saying sorry", "Apologies.")
    label, desc = parse_explanation("The feature detects apologies, which are common")
    assert label == "apologies" and desc.startswith("The feature")
    assert parse_detection("1, 3 and 9", 4) == {0, 2}
    assert parse_detection("none", 4) == set()
    s = detection_scores({0, 1}, [True, False, True, False])
    assert s["accuracy"] == 0.5 and s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5


def test_local_backend_generates(tmp_path: Path) -> None:
    llm = make_llm("local", None, cache=tmp_path / "c.sqlite")
    c = llm.complete([{"role": "user", "content": "Name a colour."}], max_tokens=4)
    assert c.text.strip() and 0 < c.completion_tokens <= 4 and c.prompt_tokens > 5
    assert llm.complete([{"role": "user", "content": "Name a colour."}], max_tokens=4).cached
    assert llm.name == "HuggingFaceTB/SmolLM2-135M-Instruct"
