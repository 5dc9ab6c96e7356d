"""No output ever lands on a store, and the read-only ``sql`` can neither write the files of a
Parquet-kept corpus nor touch DuckDB's spill folder next to the store."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import saeembed
from saeembed.errors import UserError
from tests.cli_support import cli, one_line_error
from tests.conftest import GOEMOTIONS_SAMPLE


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def store(tiny_llama: Path, topk_sae: Path, tmp_path_factory) -> Path:
    """Two corpora, one kept in DuckDB and one as Parquet files next to the store."""
    root = tmp_path_factory.mktemp("outsafe")
    docs = pl.read_parquet(GOEMOTIONS_SAMPLE).select("text")
    docs.head(12).write_parquet(root / "a.parquet")
    docs.slice(12, 12).write_parquet(root / "b.parquet")
    path = root / "s.duckdb"
    models = ["--reader", str(tiny_llama), "--sae", str(topk_sae), "--quiet"]
    assert cli("encode", str(root / "a.parquet"), "--store", str(path), "--name", "a", *models)[0] == 0
    assert cli("encode", str(root / "b.parquet"), "--store", str(path), "--name", "b", "--keep", "parquet",
               *models)[0] == 0
    return path


def registered_file(store: Path) -> Path:
    return Path(saeembed.open_store(store).sql("SELECT files FROM parquet_corpora")["files"][0].strip('[]"'))


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "html", "table"])
def test_output_naming_the_store_is_refused_and_the_store_survives(store, fmt):
    before = snapshot(store.parent)
    code, out, err = cli("diff", "--store", str(store), "a", "b", "--format", fmt, "--output", str(store))
    assert "is a DuckDB database" in one_line_error(code, err)
    assert snapshot(store.parent) == before


def test_outputs_never_land_on_the_store_its_folders_or_its_parquet_files(store, tmp_path):
    before = snapshot(store.parent)
    parquet = registered_file(store)
    for target in (f"{store}.wal", parquet, parquet.parent / "new.csv", f"{store}.work/x.csv",
                   f"{store}.tmp/x.csv", f"{store}.descriptors/x.csv"):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        for args in (["corpora"], ["features", "--limit", "3"], ["sql", "SELECT 1 AS x"]):
            code, _, err = cli(*args, "--store", str(store), "--format", "csv", "--output", str(target))
            assert "refusing to write" in one_line_error(code, err), (args, target)
    code, _, err = cli("labels", "export", str(store), "--store", str(store), "--as", "csv")
    assert "refusing to write" in one_line_error(code, err)
    code, _, err = cli("labels", "export", str(parquet), "--store", str(store), "--as", "csv")
    assert "refusing to write" in one_line_error(code, err)
    for extra in ("work", "tmp", "descriptors"):  # the folders the test made, nothing else
        for p in sorted(Path(f"{store}.{extra}").rglob("*"), reverse=True):
            p.rmdir()
        Path(f"{store}.{extra}").rmdir()
    assert snapshot(store.parent) == before
    # another store that the command was not given is refused all the same
    other = tmp_path / "other.duckdb"
    other.write_bytes(store.read_bytes())
    code, _, err = cli("corpora", "--store", str(store), "--format", "json", "--output", str(other))
    assert "DuckDB database" in one_line_error(code, err)
    assert other.read_bytes() == store.read_bytes()


def test_python_report_save_and_label_export_refuse_a_store(store, tmp_path):
    from saeembed.analysis import diff
    from saeembed.labels import export_labels

    rep = saeembed.show(diff(store, ["a", "b"], fdr=1), store)
    with pytest.raises(UserError, match="DuckDB database"):
        rep.save(store)
    with pytest.raises(UserError, match="refusing to write"):
        export_labels(store, f"{store}.wal", fmt="csv")
    assert saeembed.open_store(store).corpora().height == 2


def test_output_into_a_missing_folder_is_one_line_and_writes_are_whole(store, tmp_path):
    code, _, err = cli("corpora", "--store", str(store), "--format", "csv", "--output", str(tmp_path / "no" / "x.csv"))
    assert "does not exist" in one_line_error(code, err)
    assert not (tmp_path / "no").exists()
    out = tmp_path / "corpora.json"
    assert cli("corpora", "--store", str(store), "--format", "json", "--output", str(out))[0] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["corpora.json"]  # no temporary file left beside it


def test_sql_cannot_write_a_registered_parquet_file_and_the_store_keeps_working(store):
    parquet = registered_file(store)
    before = parquet.read_bytes()
    for statement in (f"COPY (SELECT 1 AS x) TO '{parquet}' (FORMAT parquet, USE_TMP_FILE false)",
                      f"SELECT 1; COPY (SELECT 1 AS x) TO '{parquet}' (FORMAT parquet)",
                      f"EXPORT DATABASE '{parquet.parent}'", "INSTALL httpfs", "CREATE TABLE t AS SELECT 1"):
        code, _, err = cli("sql", "--store", str(store), statement)
        assert one_line_error(code, err), statement
    assert parquet.read_bytes() == before
    code, out, _ = cli("sql", "--store", str(store), "SELECT count(*) AS n FROM activations", "--format", "json")
    assert code == 0 and '"n"' in out
    # reading the registered file stays allowed: it is how the store's view reads it
    code, out, _ = cli("sql", "--store", str(store), f"SELECT count(*) AS n FROM read_parquet('{parquet}')",
                       "--format", "csv")
    assert code == 0, out


def test_sql_cannot_read_or_write_duckdbs_spill_folder_next_to_the_store(store):
    spill = Path(f"{store}.tmp")
    spill.mkdir()
    (spill / "secret.csv").write_text("a\n1\n")
    try:
        for statement in (f"SELECT * FROM read_csv('{spill}/secret.csv')",
                          f"COPY (SELECT * FROM documents) TO '{spill}/docs.parquet'"):
            one_line_error(*cli("sql", "--store", str(store), statement)[::2])
        assert sorted(p.name for p in spill.iterdir()) == ["secret.csv"]
    finally:
        for p in spill.iterdir():
            p.unlink()
        spill.rmdir()
