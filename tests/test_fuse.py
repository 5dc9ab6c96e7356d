"""``search --fuse``: the same comments encoded with the token-level default SAE and with the
document-level SAE (``--sae doc``) in one store, their rankings fused by reciprocal rank
(real GoEmotions comments from datasets/, Apache-2.0)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from click.testing import CliRunner

from saeembed.analysis import search
from saeembed.api import open_store
from saeembed.cli import main
from saeembed.errors import UserError
from tests.conftest import GOEMOTIONS_SAMPLE
from tests.faces_support import load_in_chromium


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def fused_store(real_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """real_store's ``ge`` (token SAE) plus ``ge_doc``: the very same file encoded with the doc SAE,
    and ``other_doc``: other comments encoded with the doc SAE."""
    root = tmp_path_factory.mktemp("fuse")
    store = root / "s.duckdb"
    shutil.copy(real_store, store)
    pl.read_parquet(GOEMOTIONS_SAMPLE).slice(1000, 40).write_parquet(root / "other.parquet")
    threads = torch.get_num_threads()  # encoding must not leave the process on another thread count
    try:
        for name, path in (("ge_doc", real_store.parent / "ge.parquet"), ("other_doc", root / "other.parquet")):
            code, _, err = cli("encode", str(path), "--store", str(store), "--name", name, "--sae", "doc", "--quiet")
            assert code == 0, err
    finally:
        torch.set_num_threads(threads)
    return store


def test_fused_ranking_is_rrf_of_both_corpora_matched_by_input_row(fused_store: Path) -> None:
    with open_store(fused_store) as st:
        fused = search(st, "ge", "gratitude", k=40, fuse="ge_doc")
        alone = {c: search(st, c, "gratitude", k=1000) for c in ("ge", "ge_doc")}
        docs = st.documents("ge").select("doc_id", "meta")
    grateful = {d for d, m in zip(docs["doc_id"], docs["meta"]) if json.loads(m)["emo_gratitude"]}
    assert {"sae_rank", "ge_doc_rank", "top_feature", "top_label"} <= set(fused.columns)
    assert fused["score"].is_sorted(descending=True)
    for r in fused.iter_rows(named=True):
        ranks = [r[c] for c in ("sae_rank", "ge_doc_rank") if r[c] is not None]
        assert ranks and r["score"] == pytest.approx(sum(1 / (60 + x) for x in ranks))
        # each input rank is that document's rank when its own corpus is searched alone (same input row)
        for corpus, column in (("ge", "sae_rank"), ("ge_doc", "ge_doc_rank")):
            if r[column] is not None:
                assert alone[corpus]["row_idx"][r[column] - 1] == r["row_idx"]
    assert fused["doc_id"].is_in(list(docs["doc_id"])).all()  # ids are the first corpus' own
    both = fused.filter(pl.col("sae_rank").is_not_null() & pl.col("ge_doc_rank").is_not_null())
    assert both.height >= 10  # the two SAEs agree on many documents: fusion is not one list after the other
    hits = sum(int(d) in grateful for d in fused["doc_id"].head(20))
    assert hits >= 10, hits  # gratitude is 1 comment in 10 here


def test_fuse_refuses_other_documents_itself_and_dense_mode(fused_store: Path) -> None:
    with open_store(fused_store) as st:
        with pytest.raises(UserError, match="does not hold the same documents"):
            search(st, "ge", "gratitude", fuse="other_doc")
        with pytest.raises(UserError, match="cannot be fused with itself"):
            search(st, "ge", "gratitude", fuse="ge")
        with pytest.raises(UserError, match="--fuse applies to"):
            search(st, "ge", "gratitude", mode="dense", fuse="ge_doc")
    before = fused_store.read_bytes()
    code, out, err = cli("search", "--store", str(fused_store), "ge", "gratitude", "--fuse", "nope")
    assert code != 0 and "nope" in err and len(err.strip().splitlines()) == 1
    assert fused_store.read_bytes() == before


def test_fuse_on_the_command_line_with_hybrid_and_json(fused_store: Path, tmp_path: Path) -> None:
    code, out, err = cli("search", "--store", str(fused_store), "ge", "thank you", "--mode", "hybrid",
                         "--fuse", "ge_doc", "--top", "5", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 5
    for r in rows:
        ranks = [r[c] for c in ("sae_rank", "dense_rank", "ge_doc_rank") if r[c] is not None]
        assert r["score"] == pytest.approx(sum(1 / (60 + x) for x in ranks))
    page = tmp_path / "fused.html"
    code, _, err = cli("search", "--store", str(fused_store), "ge", "thank you", "--fuse", "ge_doc", "--top", "5",
                       "--format", "html", "--output", str(page))
    assert code == 0, err
    html = page.read_text()
    assert "fused with ge_doc" in html and "ge_doc_rank" in html


def test_browser_search_page_fuses_and_refuses_other_documents(fused_store: Path) -> None:
    import http.client
    import threading

    from saeembed.browse import make_server

    srv = make_server(fused_store, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    def get(path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=300)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    try:
        status, body = get("/search?corpus=ge&q=gratitude&k=5&fuse=ge_doc")
        assert status == 200 and "ge_doc_rank" in body and "Ranked documents" in body
        status, body = get("/search?corpus=ge&q=gratitude&k=5&fuse=other_doc")
        assert status == 400 and "does not hold the same documents" in body
        # the page as a browser renders it: the form keeps the chosen partner, the chart draws
        dom, console = load_in_chromium(f"http://{srv.host}:{srv.port}/search?corpus=ge&q=gratitude&k=5&fuse=ge_doc")
        assert console == [] and "Traceback" not in dom
        assert 'value="ge_doc" selected' in dom and "ge_doc_rank" in dom and 'class="marks"' in dom
    finally:
        srv.shutdown()
        srv.server_close()
