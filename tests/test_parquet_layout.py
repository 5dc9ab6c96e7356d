"""Corpora kept as Parquet (``--keep parquet``): registered and read in place, with the same results
as the same text kept in DuckDB in every analysis, ``sql`` and the Python API; latent statistics
computed at registration; ``drop`` removes the registration and the files; bad folders refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import saeembed
from saeembed.analysis.cluster import cluster
from saeembed.analysis.correlate import correlate
from saeembed.analysis.diff import diff
from saeembed.analysis.retrieve import search
from saeembed.cli import main
from saeembed.encode import encode_corpus
from tests.conftest import DATASETS


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def stores(tmp_path_factory, smollm2_reader, test_sae_spec) -> dict[str, Path]:
    """Three stores of the same two corpora: both in DuckDB, both as Parquet, one of each."""
    root = tmp_path_factory.mktemp("layout")
    ge = pl.read_parquet(DATASETS / "goemotions" / "sample.parquet")
    ge.slice(0, 48).write_parquet(root / "a.parquet")
    ge.slice(48, 48).write_parquet(root / "b.parquet")
    out = {kind: root / f"{kind}.duckdb" for kind in ("duckdb", "parquet", "mixed")}

    def encode(kind: str, name: str, keep: str) -> None:
        encode_corpus(out[kind], root / f"{name}.parquet", name, sae=test_sae_spec, progress=False,
                      loaded_reader=smollm2_reader, shard_docs=32, keep=keep)

    encode("duckdb", "a", "duckdb")
    shutil.copy(out["duckdb"], out["mixed"])  # the mixed store starts as the DuckDB one with corpus a
    encode("duckdb", "b", "duckdb")
    encode("mixed", "b", "parquet")
    encode("parquet", "a", "parquet")
    encode("parquet", "b", "parquet")
    return out


def test_parquet_files_are_sorted_latent_major_and_registered(stores) -> None:
    st = saeembed.open_store(stores["parquet"])
    reg = st.sql("SELECT corpus_id, location, files, n_rows FROM parquet_corpora ORDER BY corpus_id")
    assert reg["corpus_id"].to_list() == [1, 2]
    assert st.sql('SELECT count(*) AS n FROM "parquet".main.activations')["n"][0] == 0  # nothing copied in
    total = 0
    for row in reg.iter_rows(named=True):
        files = json.loads(row["files"])
        assert files and all(Path(f).parent == Path(row["location"]) for f in files)
        assert Path(row["location"]).parent == Path(f"{stores['parquet']}.parquet")
        df = pl.concat([pl.read_parquet(f) for f in files])
        assert df.height == row["n_rows"]
        assert df.columns == ["doc_id", "feature_id", "value", "total", "n_active", "peak_pos"]
        assert df.equals(df.sort("feature_id", "doc_id")), "files must be latent-major like the table"
        assert ((df["doc_id"].to_numpy() >> 32) == row["corpus_id"]).all()
        total += df.height
    assert st.sql("SELECT count(*) AS n FROM activations")["n"][0] == total
    st.close()


def test_same_rows_stats_and_embeddings_in_both_layouts(stores) -> None:
    def rows(store: Path, table: str) -> pl.DataFrame:
        s = saeembed.open_store(store)
        df = s.sql(f"SELECT * FROM {table} ORDER BY ALL")
        s.close()
        return df

    base_acts, base_stats = rows(stores["duckdb"], "activations"), rows(stores["duckdb"], "latent_stats")
    assert base_acts.height > 1000
    for kind in ("parquet", "mixed"):
        assert rows(stores[kind], "activations").equals(base_acts), kind
        assert rows(stores[kind], "latent_stats").equals(base_stats), kind  # computed at registration
        assert rows(stores[kind], "corpus_stats").select("corpus_id").equals(
            rows(stores["duckdb"], "corpus_stats").select("corpus_id"))
    for pooling in ("max", "mean", "count", "share"):
        x0, d0 = saeembed.open_store(stores["duckdb"]).embeddings("b", pooling)
        x1, d1 = saeembed.open_store(stores["parquet"]).embeddings("b", pooling)
        assert np.array_equal(d0, d1) and (x0 != x1).nnz == 0 and x0.nnz > 0


def test_every_analysis_gives_identical_results_on_both_layouts(stores) -> None:
    def run(store: Path) -> list[pl.DataFrame]:
        return [
            diff(store, ["a", "b"], fdr=1, min_diff=0.0, examples=3),
            correlate(store, "a", top=60, min_support=2, min_npmi=0.0),
            cluster(store, "b", unfiltered=True, k=3),
            cluster(store, "a", query="gratitude, anger", k=2),
            search(store, "a", "gratitude and thanks", k=10),
            search(store, "b", "sadness", k=10, mode="hybrid"),
        ]

    base = run(stores["duckdb"])
    assert base[0].height > 0 and base[4].height == 10
    for kind in ("parquet", "mixed"):
        for i, (x, y) in enumerate(zip(base, run(stores[kind]))):
            assert x.equals(y), (kind, i)


def test_sql_reads_registered_files_only(stores, tmp_path) -> None:
    query = "SELECT feature_id, count(*) AS n, round(sum(value), 4) AS s FROM activations GROUP BY 1 ORDER BY 1"
    outs = {k: cli("sql", "--store", str(v), query, "--format", "json") for k, v in stores.items()}
    assert all(code == 0 for code, _, _ in outs.values()), outs
    assert outs["parquet"][1] == outs["duckdb"][1] == outs["mixed"][1] and len(json.loads(outs["duckdb"][1])) > 50
    st = saeembed.open_store(stores["parquet"])
    registered = json.loads(st.sql("SELECT files FROM parquet_corpora LIMIT 1")["files"][0])[0]
    st.close()
    other = tmp_path / "other.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(other)
    for q in (f"SELECT * FROM read_parquet('{other}')", "SELECT * FROM read_csv('/etc/passwd')",
              "SET enable_external_access = true", "SET allowed_paths = ['/etc']",
              f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'"):
        code, _, err = cli("sql", "--store", str(stores["parquet"]), q)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (q, err)
    code, out, _ = cli("sql", "--store", str(stores["parquet"]), f"SELECT count(*) AS n FROM '{registered}'",
                       "--format", "json")
    assert code == 0 and json.loads(out)[0]["n"] > 0  # the registered files themselves stay readable


def test_drop_removes_registration_and_files(stores, tmp_path, smollm2_reader, test_sae_spec) -> None:
    store = tmp_path / "d.duckdb"
    corpus = tmp_path / "c.parquet"
    pl.read_parquet(DATASETS / "goemotions" / "sample.parquet").head(20).write_parquet(corpus)
    for name, keep in (("keep", "duckdb"), ("gone", "parquet")):
        encode_corpus(store, corpus, name, sae=test_sae_spec, progress=False, loaded_reader=smollm2_reader,
                      keep=keep, parquet_dir=str(tmp_path / "pq"))
    st = saeembed.open_store(store)
    files = json.loads(st.sql("SELECT files FROM parquet_corpora")["files"][0])
    before = st.sql("SELECT * FROM activations WHERE doc_id >> 32 = 1 ORDER BY ALL")
    st.close()
    assert files and all(Path(f).exists() and Path(f).is_relative_to(tmp_path / "pq") for f in files)
    # files kept with --parquet-dir are deleted only when drop is told that folder
    code, _, err = cli("drop", "gone", "--store", str(store))
    assert code == 2 and "--parquet-dir" in err and all(Path(f).exists() for f in files), err
    code, _, err = cli("drop", "gone", "--store", str(store), "--parquet-dir", str(tmp_path / "pq"))
    assert code == 0 and f"deleted its {len(files)} Parquet file(s)" in err
    assert not any(Path(f).exists() for f in files) and not Path(files[0]).parent.exists()
    st = saeembed.open_store(store)
    assert st.corpora()["name"].to_list() == ["keep"]
    assert st.sql("SELECT count(*) AS n FROM parquet_corpora")["n"][0] == 0
    assert st.sql("SELECT count(*) AS n FROM latent_stats WHERE corpus_id = 2")["n"][0] == 0
    assert st.sql("SELECT * FROM activations ORDER BY ALL").equals(before)
    st.close()


def test_bad_parquet_dir_is_one_line_and_store_unchanged(stores, tmp_path) -> None:
    store = stores["duckdb"]
    before = Path(store).read_bytes()
    for bad, what in (("s3://bucket/x", "object-store URI"), (str(tmp_path / "runs[1]"), "glob characters")):
        code, _, err = cli("encode", str(DATASETS / "goemotions" / "positive.parquet"), "--store", str(store),
                           "--name", "z", "--keep", "parquet", "--parquet-dir", bad, "--quiet")
        assert code == 2 and what in err and len(err.strip().splitlines()) == 1, err
    assert Path(store).read_bytes() == before


def test_missing_parquet_file_is_one_line_when_its_corpus_is_used(tmp_path, smollm2_reader, test_sae_spec) -> None:
    store = tmp_path / "m.duckdb"
    corpus = tmp_path / "c.parquet"
    pl.read_parquet(DATASETS / "goemotions" / "sample.parquet").head(10).write_parquet(corpus)
    encode_corpus(store, corpus, "m", sae=test_sae_spec, progress=False, loaded_reader=smollm2_reader,
                  keep="parquet")
    st = saeembed.open_store(store)
    files = json.loads(st.sql("SELECT files FROM parquet_corpora")["files"][0])
    st.close()
    Path(files[0]).unlink()
    code, _, err = cli("sql", "--store", str(store), "SELECT count(*) FROM activations")
    assert code == 0 and "missing" in err and "left out" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("search", "--store", str(store), "m", "gratitude")
    assert code == 2 and "missing" in err and "saeembed drop m" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("drop", "m", "--store", str(store))  # a corpus with lost files can still be dropped
    assert code == 0, err
