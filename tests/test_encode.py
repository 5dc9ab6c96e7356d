"""Encode pipeline and store: resume after kill -9, read-only SQL, every bad input, the Python API, row
filters on long-format files, and the progress the encode reports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import saeembed
from saeembed.cli import main
from saeembed.encode.workdir import work_dir
from saeembed.errors import UserError
from saeembed.threads import torch_threads
from tests.conftest import GOEMOTIONS_SAMPLE, make_random_sae


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def ge_small(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ge") / "ge.parquet"
    pl.read_parquet(GOEMOTIONS_SAMPLE).head(120).select("id", "text", "ekman").write_parquet(path)
    return path


def _rows(store: Path, name: str) -> pl.DataFrame:
    s = saeembed.open_store(store)
    df = s.sql("SELECT a.doc_id, a.feature_id, a.value, a.total, a.n_active FROM activations a "
               "JOIN documents d USING (doc_id) JOIN corpora c USING (corpus_id) WHERE c.name = ? "
               "ORDER BY 1, 2", [name])
    s.close()
    return df


def _snapshot(store: Path) -> dict:
    s = saeembed.open_store(store)
    out = {t: s.sql(f"SELECT count(*) AS n FROM {t}")["n"][0]
           for t in ("corpora", "documents", "activations", "features", "saes")}
    s.close()
    return out


def test_tiny_encode_end_to_end_and_api(tmp_path, tiny_llama, tiny_sae, ge_small):
    store = tmp_path / "s.duckdb"
    code, out, err = cli("encode", str(ge_small), "--store", str(store), "--name", "ge", "--reader",
                         str(tiny_llama), "--sae", str(tiny_sae), "--format", "json", "--quiet")
    assert code == 0, err
    assert "estimated size on disk" in err
    (row,) = json.loads(out)
    assert row["name"] == "ge" and row["n_docs"] == 120 and row["layer"] == 2
    s = saeembed.open_store(store)
    mat, doc_ids = s.embeddings("ge")
    assert mat.shape == (120, 128) and len(doc_ids) == 120
    acts = s.sql("SELECT * FROM activations ORDER BY doc_id, feature_id")
    assert acts.height == mat.nnz and (acts["value"] > 0).all()
    assert (acts["n_active"] >= 1).all() and (acts["total"] >= acts["value"] - 1e-5).all()
    assert np.allclose(np.sort(mat.data), np.sort(acts["value"].to_numpy()))
    mean, _ = s.embeddings("ge", pooling="mean")
    assert (mean.data <= mat.data + 1e-5).all()  # a mean over tokens never exceeds the max
    share, _ = s.embeddings("ge", pooling="share")
    n_tokens = s.documents("ge")["n_tokens"].to_numpy()  # the pooled tokens, in doc id order like the rows
    count, _ = s.embeddings("ge", pooling="count")
    assert n_tokens.min() >= 1 and np.allclose(share.toarray(), count.toarray() / n_tokens[:, None], atol=1e-6)
    assert (share.data > 0).all() and (share.data <= 1).all()  # the share of its tokens a latent fires on
    docs = s.documents("ge")
    assert docs["text"][0] == pl.read_parquet(ge_small)["text"][0]
    assert json.loads(docs["meta"][0])["ekman"] is not None
    assert isinstance(s.corpora(), pl.DataFrame)
    config = json.loads(s.corpus("ge")["config"])
    assert config["extra"]["prefix_cache"] is True  # how the rows were made is recorded with them
    s.close()
    # same command again: nothing to do, nothing duplicated
    before = _snapshot(store)
    code, _, err = cli("encode", str(ge_small), "--store", str(store), "--name", "ge", "--reader",
                       str(tiny_llama), "--sae", str(tiny_sae), "--quiet")
    assert code == 0 and "already encoded" in err
    assert _snapshot(store) == before


@pytest.mark.slow  # a subprocess or a training run: minutes on a loaded 2-core machine
def test_resume_after_kill_gives_identical_rows(tmp_path, tiny_llama, tiny_sae):
    texts = pl.read_parquet(GOEMOTIONS_SAMPLE).head(600).select("text")
    corpus = tmp_path / "c.parquet"
    texts.write_parquet(corpus)
    args = [str(corpus), "--name", "c", "--reader", str(tiny_llama), "--sae", str(tiny_sae),
            "--shard-docs", "8", "--batch-tokens", "256", "--quiet"]
    # fp32 matmuls differ in the last bits between thread counts: every run here uses one thread
    clean = tmp_path / "clean.duckdb"
    with torch_threads(1):
        assert cli("encode", *args, "--store", str(clean))[0] == 0

    crashed = tmp_path / "crashed.duckdb"
    work = work_dir(crashed, "c")
    cmd = [sys.executable, "-m", "saeembed", "encode", *args, "--store", str(crashed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and len(list(work.glob("acts-*.parquet"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(work.glob("acts-*.parquet")))
    assert 3 <= done < 75, "the kill must land mid-run for this test to mean anything"
    assert not saeembed.open_store(crashed).corpora()["name"].to_list()  # nothing half-ingested

    with torch_threads(1):
        assert cli("encode", *args, "--store", str(crashed))[0] == 0
    assert not work.exists()
    a, b = _rows(clean, "c"), _rows(crashed, "c")
    assert a.height == b.height and a.equals(b)


def test_sql_is_read_only_and_has_no_file_access(tmp_path, tiny_llama, tiny_sae, ge_small):
    store = tmp_path / "s.duckdb"
    assert cli("encode", str(ge_small), "--store", str(store), "--name", "ge", "--reader", str(tiny_llama),
               "--sae", str(tiny_sae), "--limit", "10", "--quiet")[0] == 0
    before = _snapshot(store)
    for query in ("DELETE FROM activations", "DROP TABLE documents", "CREATE TABLE x (a INT)",
                  "COPY documents TO '/tmp/leak.csv'", "SELECT * FROM read_csv('/etc/passwd')",
                  "ATTACH '/tmp/other.duckdb' AS o"):
        code, out, err = cli("sql", "--store", str(store), query)
        assert code == 2, query
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert _snapshot(store) == before
    code, out, _ = cli("sql", "--store", str(store), "SELECT count(*) AS n FROM documents", "--format", "json")
    assert code == 0 and json.loads(out) == [{"n": 10}]
    code, out, _ = cli("sql", "--store", str(store), "SELECT name FROM corpora", "--format", "csv")
    assert out.splitlines() == ["name", "ge"]
    os.environ["SAEEMBED_STORE"] = str(store)
    try:
        code, out, _ = cli("corpora", "--format", "json")
    finally:
        del os.environ["SAEEMBED_STORE"]
    assert code == 0 and json.loads(out)[0]["name"] == "ge"


def _bad(tmp_path: Path, store: Path, corpus: Path, *extra: str, reader: Path, sae: Path) -> str:
    code, out, err = cli("encode", str(corpus), "--store", str(store), "--reader", str(reader),
                         "--sae", str(sae), "--quiet", *extra)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert out == ""
    return err


def test_bad_inputs_fail_with_one_line_and_leave_the_store_unchanged(tmp_path, tiny_llama, tiny_sae, ge_small):
    store = tmp_path / "s.duckdb"
    assert cli("encode", str(ge_small), "--store", str(store), "--name", "ge", "--reader", str(tiny_llama),
               "--sae", str(tiny_sae), "--limit", "5", "--quiet")[0] == 0
    before = _snapshot(store)
    kw = {"reader": tiny_llama, "sae": tiny_sae}

    assert "not found" in _bad(tmp_path, store, tmp_path / "missing.parquet", "--name", "x", **kw)
    assert "--text-col" in _bad(tmp_path, store, ge_small, "--name", "x", "--text-col", "nope", **kw)
    empty = tmp_path / "empty.csv"
    empty.write_text('text\nhello\n""\nworld\n')
    assert "--drop-empty" in _bad(tmp_path, store, empty, "--name", "x", **kw)
    nulls = tmp_path / "nulls.parquet"
    pl.DataFrame({"text": ["a", None]}, schema={"text": pl.String}).write_parquet(nulls)
    assert "empty or null" in _bad(tmp_path, store, nulls, "--name", "x", **kw)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert "UTF-8" in _bad(tmp_path, store, latin, "--name", "x", **kw)
    other = make_random_sae(tmp_path / "other_sae", d_in=32, d_sae=64, layer=2, model_name=str(tiny_llama), seed=3)
    assert "already used" in _bad(tmp_path, store, ge_small, "--name", "ge", reader=tiny_llama, sae=other)
    wide = make_random_sae(tmp_path / "wide_sae", d_in=48, d_sae=64, layer=2, model_name=str(tiny_llama))
    assert "d_in=48" in _bad(tmp_path, store, ge_small, "--name", "x", reader=tiny_llama, sae=wide)
    assert "layer" in _bad(tmp_path, store, ge_small, "--name", "x", "--layer", "1", **kw)
    assert _snapshot(store) == before
    assert not Path(f"{store}.work", "x").exists() or not list(Path(f"{store}.work", "x").glob("acts-*"))

    # --drop-empty keeps the original row numbers so results join back to the source file
    assert cli("encode", str(empty), "--store", str(store), "--name", "e", "--reader", str(tiny_llama),
               "--sae", str(tiny_sae), "--drop-empty", "--quiet")[0] == 0
    s = saeembed.open_store(store)
    assert s.documents("e")["row_idx"].to_list() == [0, 2]


@pytest.mark.slow
def test_shipped_smollm2_with_sae_checkpoint_from_disk(tmp_path, smollm2_reader, test_sae_spec):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t, "topic": k}) for t, k in [
        ("The striker scored twice in the second half.", "sport"),
        ("Central banks raised interest rates again.", "business"),
        ("My puppy chewed my favourite shoes.", "pets"),
    ]))
    store = tmp_path / "s.duckdb"
    saeembed.open_store(store).encode(corpus, "three", sae=test_sae_spec, loaded_reader=smollm2_reader,
                                      progress=False)
    s = saeembed.open_store(store)
    info = s.corpus("three")
    assert info["reader"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and info["n_docs"] == 3
    mat, _ = s.embeddings("three")
    assert mat.shape[0] == 3 and (mat.getnnz(axis=1) > 0).all()
    assert s.features().height > 0 or test_sae_spec != "default"


def test_corpus_formats_and_messages(tmp_path, tiny_llama, tiny_sae):
    from saeembed.corpus import read_corpus

    (tmp_path / "lines.txt").write_text("first document\nsecond document\n")
    assert read_corpus(tmp_path / "lines.txt").docs["text"].to_list() == ["first document", "second document"]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha")
    (folder / "b.txt").write_text("beta")
    c = read_corpus(folder)
    assert c.docs["text"].to_list() == ["alpha", "beta"] and "a.txt" in c.docs["meta"][0]
    (tmp_path / "t.csv").write_text("title,comment\nx,hello there\ny,general kenobi\n")
    err = pytest.raises(UserError, read_corpus, tmp_path / "t.csv")
    assert "--text-col" in str(err.value)
    assert read_corpus(tmp_path / "t.csv", text_col="comment").n_docs == 2

    chats = tmp_path / "chats.jsonl"
    chats.write_text("\n".join(json.dumps({"conv": [{"role": "user", "content": q},
                                                      {"role": "assistant", "content": a}]})
                               for q, a in [("hi", "hello!"), ("2+2?", "4")]))
    store = tmp_path / "s.duckdb"
    code, out, err = cli("encode", str(chats), "--store", str(store), "--name", "chats", "--messages-col", "conv",
                         "--reader", str(tiny_llama), "--sae", str(tiny_sae), "--quiet", "--format", "json")
    assert code == 0, err
    docs = saeembed.open_store(store).documents("chats")
    assert json.loads(docs["text"][0])[1]["content"] == "hello!"


def test_where_selects_rows_of_a_long_format_file(tmp_path, tiny_llama, tiny_sae):
    """AlpacaEval holds every generator's answers in one table: --where encodes one generator's rows,
    keeping their row numbers in the source; the log names the text column it read."""
    from tests.conftest import shared_dataset

    src = pl.read_parquet(shared_dataset("alpacaeval_model_outputs"))
    long = src.filter(pl.col("instruction_id") < 12).with_columns(pl.col("output").str.slice(0, 300))
    path = tmp_path / "long.parquet"
    long.write_parquet(path)
    store = tmp_path / "s.duckdb"
    gen = "gpt4_1106_preview"
    base = ["encode", str(path), "--store", str(store), "--reader", str(tiny_llama), "--sae", str(tiny_sae)]
    code, out, err = cli(*base, "--name", "gpt4", "--where", f"generator = '{gen}'", "--format", "json")
    assert code == 0, err
    assert "column 'output'" in err and f"where generator = '{gen}'" in err
    wanted = long.with_row_index("row").filter(pl.col("generator") == gen)
    assert json.loads(out)[0]["n_docs"] == wanted.height == 12
    docs = saeembed.open_store(store).documents("gpt4")
    assert docs["row_idx"].to_list() == wanted["row"].to_list()
    assert docs["text"].to_list() == wanted["output"].to_list()
    assert {json.loads(m)["generator"] for m in docs["meta"]} == {gen}
    # a condition with --limit: the first N matching rows
    code, out, err = cli(*base, "--name", "two", "--where", "style = 'concise' AND instruction_id < 3", "--limit",
                         "4", "--format", "json", "--quiet")
    assert code == 0, err
    assert json.loads(out)[0]["n_docs"] == 4
    for bad, why in (("generator = ", "does not run"), ("no_such_column = 1", "no_such_column"),
                     ("generator = 'nobody'", "matches none"), ("1 = 1; DROP TABLE x", "does not run")):
        code, out, err = cli(*base, "--name", "bad", "--where", bad)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and out == "", (bad, err)
        assert why in err or "not one condition" in err, (bad, err)


def test_progress_moves_per_batch_with_the_estimate_first_and_one_summary(tmp_path, tiny_llama, tiny_sae, ge_small):
    store = tmp_path / "s.duckdb"
    code, out, err = cli("encode", str(ge_small), "--store", str(store), "--name", "ge", "--reader", str(tiny_llama),
                         "--sae", str(tiny_sae), "--batch-tokens", "256")
    assert code == 0 and out == "", err  # stdout holds nothing unless --format asks
    states = re.findall(r"encoding:\s+(\d+)%\|[^|]*\|\s*([\d.]+k?)/[\d.]+k? tokens, ([\d,]+)/120 docs", err)
    docs_seen = [int(d.replace(",", "")) for _, _, d in states]
    assert len(set(docs_seen)) >= 4  # one shard of 120 documents, and the bar moved batch by batch
    assert docs_seen[-1] == 120 and docs_seen == sorted(docs_seen)
    first_move = next(i for i, (_, n, _) in enumerate(states) if float(n.rstrip("k")) > 0)
    estimate = err.index("estimated size on disk")
    assert estimate < err.rindex(f"{states[-1][2]}/120 docs")  # the estimate before the end of the work
    assert estimate < err.index("120/120 docs") and first_move < len(states) - 1
    summary = [line for line in err.splitlines() if line.startswith("stored 'ge'")]
    assert len(summary) == 1 and "tok/s" in summary[0] and "the store grew by" in summary[0]
