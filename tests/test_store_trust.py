"""A store handed over is data, not instructions: ``drop`` deletes only the Parquet files saeembed
wrote inside the Parquet folder the user names, ``sql`` reads no file a registration merely lists,
and a damaged, empty or missing Parquet file breaks only its own corpus (one line when it is used),
never the store's other corpora."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

import saeembed
from tests.cli_support import cli, one_line_error
from tests.conftest import GOEMOTIONS_SAMPLE


@pytest.fixture(scope="module")
def template(tiny_llama: Path, topk_sae: Path, tmp_path_factory) -> Path:
    """Three corpora: ``a`` and ``c`` kept in DuckDB, ``b`` kept as Parquet files next to the store."""
    root = tmp_path_factory.mktemp("trust")
    docs = pl.read_parquet(GOEMOTIONS_SAMPLE).select("text")
    models = ["--reader", str(tiny_llama), "--sae", str(topk_sae), "--quiet"]
    path = root / "store" / "s.duckdb"
    path.parent.mkdir()
    for i, (name, keep) in enumerate((("a", "duckdb"), ("b", "parquet"), ("c", "duckdb"))):
        docs.slice(12 * i, 12).write_parquet(root / f"{name}.parquet")
        code, _, err = cli("encode", str(root / f"{name}.parquet"), "--store", str(path), "--name", name,
                           "--keep", keep, *models)
        assert code == 0, err
    return path


@pytest.fixture()
def store(template: Path, tmp_path: Path) -> Path:
    """A copy of the template (store and Parquet folder) whose registration names the copied files."""
    shutil.copytree(template.parent, tmp_path / "store")
    path = tmp_path / "store" / template.name
    con = duckdb.connect(str(path))
    con.execute("UPDATE parquet_corpora SET location = replace(location, $old, $new), files = replace(files, $old, "
                "$new)::JSON", {"old": str(template.parent), "new": str(path.parent)})
    con.close()
    return path


def registration(store: Path) -> tuple[Path, list[Path]]:
    row = saeembed.open_store(store).sql("SELECT location, files FROM parquet_corpora").row(0)
    return Path(row[0]), [Path(f) for f in json.loads(row[1])]


def register(store: Path, location: Path | str, files: list[Path | str]) -> None:
    """What a store handed over may hold: any folder and any file list for the Parquet-kept corpus."""
    con = duckdb.connect(str(store))
    con.execute("UPDATE parquet_corpora SET location = ?, files = ?",
                [str(location), json.dumps([str(f) for f in files])])
    con.close()


def corpora(store: Path) -> list[str]:
    return saeembed.open_store(store).corpora()["name"].to_list()


def test_drop_deletes_nothing_a_handed_over_registration_lists_but_saeembeds_own_files(store, tmp_path):
    location, files = registration(store)
    assert location.name.startswith("b-c2-") and [f.name for f in files] == ["data_0.parquet"]
    victims = tmp_path / "victims"
    victims.mkdir()
    notes = victims / "notes.txt"
    notes.write_text("keep me")
    lookalike = victims / location.name  # a folder named like ours, outside the store's Parquet folder
    lookalike.mkdir()
    (lookalike / "data_0.parquet").write_bytes(files[0].read_bytes())
    (location / "notes.txt").write_text("keep me too")
    for where, listed in ((location, [notes]), (lookalike, [lookalike / "data_0.parquet"]),
                          (location, [location / "notes.txt"]), (location, [location / ".." / location.name /
                                                                            "data_0.parquet"]),
                          (victims, [notes]), ("relative-c2-0123abcd", ["relative-c2-0123abcd/data_0.parquet"])):
        register(store, where, listed)
        err = one_line_error(*cli("drop", "b", "--store", str(store))[::2])
        assert "refusing to delete" in err and "--keep-files" in err, (where, listed)
        assert corpora(store) == ["a", "b", "c"], "a refused drop changes nothing"
    assert notes.read_text() == "keep me" and (location / "notes.txt").exists()
    assert (lookalike / "data_0.parquet").exists() and files[0].exists()
    # the user's way out: drop the corpus and delete no file at all
    code, _, err = cli("drop", "b", "--store", str(store), "--keep-files")
    assert code == 0 and "deleted" not in err, err
    assert corpora(store) == ["a", "c"] and notes.exists() and files[0].exists()


def test_drop_deletes_its_own_files_and_says_which_were_already_gone(store):
    location, files = registration(store)
    other = location / "notes.txt"  # something the user put there is not deleted, nor its folder
    other.write_text("mine")
    code, _, err = cli("drop", "b", "--store", str(store), "--parquet-dir", str(store.parent / "elsewhere"))
    assert "does not lie in the Parquet folder" in one_line_error(code, err)
    code, _, err = cli("drop", "b", "--store", str(store))
    assert code == 0 and "deleted its 1 Parquet file(s)" in err, err
    assert not files[0].exists() and other.exists() and "kept" in err
    assert corpora(store) == ["a", "c"]


def test_drop_of_a_corpus_whose_files_are_gone_does_not_claim_to_delete_them(store):
    location, files = registration(store)
    files[0].unlink()
    code, _, err = cli("drop", "b", "--store", str(store))
    assert code == 0 and "already missing" in err and "deleted its" not in err, err
    assert not location.exists() and corpora(store) == ["a", "c"]


def test_sql_reads_no_file_that_a_registration_merely_lists(store, tmp_path):
    secret = tmp_path / "secret.parquet"
    pl.DataFrame({"doc_id": [1], "feature_id": [1], "value": [1.0], "total": [1.0], "n_active": [1],
                  "secret": ["the payroll"]}).write_parquet(secret)
    for where, listed in ((tmp_path, [secret]), (registration(store)[0], [secret])):
        register(store, where, listed)
        code, _, err = cli("sql", "--store", str(store), f"SELECT * FROM read_parquet('{secret}')")
        assert code == 2 and "error: " in err and "payroll" not in err, err
        code, out, err = cli("sql", "--store", str(store), "SELECT count(*) AS n FROM activations WHERE feature_id = 1 "
                             "AND value = 1.0 AND doc_id = 1", "--format", "json")
        assert code == 0 and json.loads(out) == [{"n": 0}], (out, err)
        assert err.startswith("warning: corpus 'b' cannot be read") and "--keep-files" in err, err
    with pytest.raises(saeembed.UserError, match="corpus 'b' cannot be read"):
        saeembed.open_store(store).embeddings("b")


@pytest.mark.parametrize("damage", ["truncate", "empty", "delete", "folder"])
def test_a_damaged_parquet_file_breaks_only_its_own_corpus(store, damage):
    from saeembed.analysis import diff

    location, files = registration(store)
    before = saeembed.open_store(store).sql("SELECT count(*) AS n FROM activations WHERE doc_id >> 32 <> 2")["n"][0]
    if damage == "truncate":
        files[0].write_bytes(files[0].read_bytes()[:100])
    elif damage == "empty":
        files[0].write_bytes(b"")
    elif damage == "delete":
        files[0].unlink()
    else:
        files[0].unlink()
        files[0].mkdir()
    what = {"truncate": "truncated", "empty": "empty", "delete": "missing", "folder": "not a regular file"}[damage]
    code, out, err = cli("corpora", "--store", str(store), "--format", "json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["a", "b", "c"]
    assert err.startswith("warning: corpus 'b' cannot be read") and what in err and "drop it" in err, err
    code, out, _ = cli("sql", "--store", str(store), "SELECT count(*) AS n FROM activations", "--format", "json")
    assert code == 0 and json.loads(out) == [{"n": before}]
    code, out, err = cli("diff", "--store", str(store), "a", "c", "--fdr", "1", "--min-diff", "0", "--format", "csv")
    assert code == 0 and pl.read_csv(out.encode()).height > 0, err
    assert diff(store, ["a", "c"], fdr=1, min_diff=0).height > 0
    for args in (["diff", "a", "b"], ["search", "b", "anything", "--mode", "example"], ["cluster", "b", "--unfiltered"],
                 ["correlate", "b"]):
        err = one_line_error(*cli(*args, "--store", str(store))[::2])
        assert "corpus 'b' cannot be read" in err and what in err and "saeembed drop b" in err, (args, err)
    if damage == "folder":
        files[0].rmdir()
    code, _, err = cli("drop", "b", "--store", str(store))
    assert code == 0, err
    code, _, err = cli("corpora", "--store", str(store))
    assert code == 0 and err == ""
    assert not location.exists()


def test_the_browser_keeps_serving_the_other_corpora(store):
    import html
    import http.client
    import threading

    from saeembed.browse import make_server

    _, files = registration(store)
    files[0].write_bytes(files[0].read_bytes()[:100])
    st = saeembed.open_store(store)
    feature = st.sql("SELECT feature_id FROM latent_stats GROUP BY 1 HAVING count(DISTINCT corpus_id) = 3 "
                     "ORDER BY sum(n_present) DESC LIMIT 1")["feature_id"][0]
    docs = st.sql("SELECT min(doc_id) AS d FROM documents GROUP BY corpus_id ORDER BY corpus_id")["d"].to_list()
    st.close()
    srv = make_server(store, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    def get(path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=120)
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, html.unescape(resp.read().decode())

    try:
        status, body = get("/")
        assert status == 200 and all(f">{c}<" in body for c in "abc")
        status, body = get(f"/latent/{feature}")
        assert status == 200 and "Top documents in a" in body and "Top documents in b" not in body
        assert get(f"/doc/{docs[0]}")[0] == 200 and get(f"/doc/{docs[2]}")[0] == 200
        status, body = get(f"/doc/{docs[1]}")
        assert status == 400 and "corpus 'b' cannot be read" in body and "saeembed drop b" in body
        status, body = get(f"/latent/{feature}?corpus=b")
        assert status == 400 and "corpus 'b' cannot be read" in body
    finally:
        srv.shutdown()
        srv.server_close()
