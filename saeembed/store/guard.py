"""What an output may never overwrite: a store, its write-ahead log, its side folders and its
registered Parquet files.

Why: ``--output`` takes any path, and one slip (``--output S.duckdb`` after ``--store S.duckdb``)
used to replace a store of hours of encoding with a 170-byte CSV. Every file a command writes for
the user (``--output``, ``labels export``, ``Report.save``) is checked here first, before any work is
done, and refused with one line when it names something the store owns or any DuckDB database.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .connection import check_store_file, lock_wait_seconds, open_waiting
from .schema import DUCKDB_MAGIC

# Folders next to STORE that saeembed (or DuckDB itself) keeps: unfinished shards, Parquet-kept
# corpora, DuckDB's spill folder, descriptor and dense-embedding caches, evaluation corpora.
SIDE_FOLDERS = (".work", ".parquet", ".tmp", ".descriptors", ".dense")


def _is_duckdb_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(12)[8:12] == DUCKDB_MAGIC
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _registered(store: Path) -> list[tuple[Path, list[Path]]]:
    """(folder, files) of every Parquet-kept corpus of ``store``; empty when it has none (or is not a
    store yet)."""
    import duckdb


    if not check_store_file(store):
        return []
    con = open_waiting(store, True, {}, lock_wait_seconds())
    try:
        has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'parquet_corpora'").fetchall()[0][0]
        rows = con.execute("SELECT location, files FROM parquet_corpora").fetchall() if has else []
    except duckdb.Error:
        rows = []
    finally:
        con.close()
    out = []
    for location, files in rows:
        try:
            listed = [Path(f).resolve() for f in json.loads(files)]
        except (TypeError, ValueError):
            listed = []
        out.append((Path(location).resolve(), listed))
    return out


def check_output_path(output: str | Path, store: str | Path | None = None) -> Path:
    """``output`` if a command may write its result there; otherwise one line saying why not.

    Refused: a missing folder, a folder, any existing DuckDB database or write-ahead log, and for
    ``store`` (when given) the store itself, its ``.wal``, its side folders (``STORE.work``,
    ``STORE.parquet``, ``STORE.tmp``, ``STORE.descriptors``, ``STORE.dense``) and the folders and
    files of its Parquet-kept corpora, wherever they lie.
    """
    path = Path(output)
    target = path.resolve()
    if target.is_dir():
        raise UserError(f"cannot write {output}: it is a folder; give a file name")
    if not target.parent.is_dir():
        raise UserError(f"cannot write {output}: the folder {path.parent} does not exist; create it first or write "
                        "somewhere else")
    why = None
    if _is_duckdb_file(target):
        why = "is a DuckDB database (a store)"
    elif target.name.endswith(".wal") and _is_duckdb_file(target.with_name(target.name[: -len(".wal")])):
        why = "is the write-ahead log of a store"
    elif store is not None:
        st = Path(store).resolve()
        if target in (st, st.with_name(st.name + ".wal")):
            why = "is the store itself"
        for suffix in SIDE_FOLDERS:
            if why is None and _inside(target, st.with_name(st.name + suffix)):
                why = f"lies inside the store's folder {st.name + suffix}"
        for location, files in ([] if why else _registered(st)):
            if target in files or _inside(target, location):
                why = "is (or lies beside) a Parquet file of a corpus kept with --keep parquet"
                break
    if why:
        raise UserError(f"refusing to write {output}: it {why}; pick another output file")
    return path


READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")


def check_read_only_sql(query: str) -> None:
    """Refuse any statement of the ``sql`` command that is not a query.

    Why a check of our own: DuckDB's ``read_only`` stops writes to the database, but ``COPY ... TO``
    may still write any file that ``allowed_paths`` lets it read, i.e. the registered Parquet files
    of corpora kept with ``--keep parquet``; parsing the statements first is the one place where
    reading and writing those files can be told apart. SELECT covers WITH, SHOW, DESCRIBE, SUMMARIZE
    and table functions.
    """
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise UserError(f"SQL error: {str(exc).splitlines()[0]}") from None
    for st in statements:
        kind = st.type.name
        if kind not in READ_ONLY_STATEMENTS:
            raise UserError(f"saeembed sql runs read-only queries (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN); a {kind} "
                            "statement is refused. Write results with --output FILE, or use the Python API "
                            "(saeembed.open_store(...).sql) for anything else")


__all__ = ["READ_ONLY_STATEMENTS", "SIDE_FOLDERS", "check_output_path", "check_read_only_sql"]
