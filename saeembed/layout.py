"""Corpora kept as Parquet: activations that stay in sorted Parquet files the store registers and
reads in place, for corpora too big to copy into one DuckDB file (or encoded on a cluster, where the
run then ends with a registration, not a copy).

Files: ``DIR/<name>-c<corpus_id>-<random>/data_N.parquet`` (``DIR`` is ``--parquet-dir``, default
``STORE.parquet``), columns exactly those of the ``activations`` table (``doc_id`` included), sorted
latent-major like the table (``feature_id, doc_id``) and cut into files of ≈256 MB, so a query on a
few latents or on one corpus' doc-id range skips whole files and row groups by their statistics.
Table ``parquet_corpora(corpus_id, location, files, n_rows)`` lists every file explicitly (never a
glob). Every read-only connection gets a temporary view ``activations`` = the table UNION ALL the
registered files, so analyses, ``sql`` and the Python API read both kinds the same way; for the
``sql`` command external access stays disabled except for exactly the registered files
(``allowed_paths``) and the configuration is locked. ``drop`` removes the registration and deletes
the corpus' files and folder.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from .errors import UserError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS parquet_corpora (
    corpus_id INTEGER PRIMARY KEY,
    location TEXT NOT NULL,
    files JSON NOT NULL,
    n_rows BIGINT
);
"""
FILE_SIZE = "256MB"  # per Parquet file; DuckDB starts a new file past this size
ROW_GROUP = 122_880  # DuckDB's default row group: the unit its statistics prune
COLUMNS = "doc_id, feature_id, value, total, n_active"
POSITION_COLUMNS = ("peak_pos",)  # NULL for corpora stored before it was kept
_GLOB = re.compile(r"[*?\[\]{}]")


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def location_for(store_path: str | Path, parquet_dir: str | None) -> Path:
    """The folder that receives the corpus' Parquet folder; refuses URIs and glob characters (DuckDB
    expands globs in file names it reads)."""
    from .encode.uri import is_uri

    if parquet_dir and is_uri(parquet_dir) and not parquet_dir.startswith("file://"):
        raise UserError(f"--parquet-dir {parquet_dir!r}: DuckDB reads the kept files in place, so they must be on a "
                        "path this machine mounts (a local or network file system), not an object-store URI")
    where = Path(parquet_dir[len("file://"):] if parquet_dir and parquet_dir.startswith("file://") else
                 (parquet_dir or f"{store_path}.parquet")).absolute()
    if _GLOB.search(str(where)):
        raise UserError(f"the Parquet folder {where} contains glob characters (* ? [ ] {{ }}), which DuckDB would "
                        "expand when reading; pass --parquet-dir without them")
    return where


def keep_as_parquet(con: Any, *, corpus_id: int, name: str, lo: int, hi: int, shards: Any, store_path: str | Path,
                    parquet_dir: str | None, positions: bool = True) -> list[str]:
    """Write the corpus' activations (registered as the relation ``shards``: row_idx, feature_id, value,
    total, n_active and, with ``positions``, peak_pos) as sorted Parquet files, register
    them and compute the corpus' latent statistics from them; inside the caller's transaction.
    Returns the files."""
    from .stats import compute as compute_stats
    from .stats import write as write_stats

    where = location_for(store_path, parquet_dir)
    where.mkdir(parents=True, exist_ok=True)
    final = where / f"{name}-c{corpus_id}-{uuid.uuid4().hex[:8]}"
    tmp = where / f".{final.name}.tmp"
    con.register("_keep_shards", shards)
    try:
        pos = ", peak_pos::INTEGER AS peak_pos" if positions else ""
        con.execute(f"""COPY (SELECT ({int(lo)}::BIGINT | row_idx)::BIGINT AS doc_id, feature_id::INTEGER AS feature_id,
                                     value::FLOAT AS value, total::FLOAT AS total, n_active::INTEGER AS n_active{pos}
                              FROM _keep_shards ORDER BY feature_id, row_idx)
                        TO {_sql_str(str(tmp))}
                        (FORMAT parquet, COMPRESSION zstd, FILE_SIZE_BYTES '{FILE_SIZE}',
                         ROW_GROUP_SIZE {ROW_GROUP})""")
        con.unregister("_keep_shards")
        os.replace(tmp, final)
        files = sorted((str(p) for p in final.glob("*.parquet")),
                       key=lambda f: int(re.sub(r"\D", "", Path(f).stem) or 0))
        n_rows = 0
        if files:
            n_rows = int(con.execute(f"SELECT count(*) FROM read_parquet({_file_list(files)}, "
                                     "hive_partitioning = false)").fetchall()[0][0])
        con.execute("INSERT INTO parquet_corpora VALUES (?, ?, ?, ?)",
                    [int(corpus_id), str(final), json.dumps(files), n_rows])
        # the statistics read the new files through a view named like the table, then the view goes
        _view(con, files, include_table=False)
        try:
            write_stats(con, corpus_id, compute_stats(con, lo, hi))
        finally:
            con.execute("DROP VIEW IF EXISTS temp.main.activations")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        raise
    return files


def _file_list(files: list[str]) -> str:
    return "[" + ", ".join(_sql_str(f) for f in files) + "]"


def _columns(con: Any, relation: str) -> str:
    """COLUMNS plus the token positions, NULL where ``relation`` predates them."""
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
    return ", ".join([COLUMNS] + [c if c in have else f"NULL::INTEGER AS {c}" for c in POSITION_COLUMNS])


def _view(con: Any, files: list[str], include_table: bool = True) -> None:
    parts = []
    if include_table:
        db = con.execute("SELECT current_database()").fetchall()[0][0]
        table = f'"{db.replace(chr(34), chr(34) * 2)}".main.activations'
        parts.append(f"SELECT {_columns(con, table)} FROM {table}")
    if files:
        # union_by_name: files of corpora kept before the positions existed lack those columns
        kept = f"read_parquet({_file_list(files)}, hive_partitioning = false, union_by_name = true)"
        parts.append(f"SELECT {_columns(con, kept)} FROM {kept}")
    if not parts:
        parts.append(f"SELECT {_columns(con, 'main.activations')} FROM main.activations WHERE false")
    con.execute("CREATE OR REPLACE TEMP VIEW activations AS " + " UNION ALL ".join(parts))


def registered_files(con: Any) -> list[str]:
    has = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'parquet_corpora' "
                      "AND table_schema = 'main' AND table_catalog = current_database()").fetchall()[0][0]
    if not has:
        return []
    return [f for (files,) in con.execute("SELECT files FROM parquet_corpora ORDER BY corpus_id").fetchall()
            for f in json.loads(files)]


def attach(con: Any, external_access: bool) -> None:
    """Give a read-only connection the ``activations`` view over table + registered files; without
    external access, only the registered files may be read and the configuration is locked."""
    files = registered_files(con)
    if files:
        missing = [f for f in files if not os.path.exists(f)]
        if missing:
            raise UserError(f"{len(missing)} Parquet file(s) of a Parquet-kept corpus are missing (first: "
                            f"{missing[0]}); restore them, or drop the corpus")
    if not external_access:
        if files:
            con.execute("SET allowed_paths = $p", {"p": files})
        # DuckDB lets a query read and write its spill folder (STORE.tmp by default) even without
        # external access; a private folder, removed at exit, keeps STORE.tmp out of user SQL
        con.execute("SET temp_directory = $t", {"t": _private_spill_folder()})
        con.execute("SET enable_external_access = false")
    if files:
        _view(con, files)
    if not external_access:
        con.execute("SET lock_configuration = true")


@functools.lru_cache(maxsize=1)
def _private_spill_folder() -> str:
    """One per process (the browser opens a connection per request), removed at exit."""
    import atexit
    import tempfile

    folder = tempfile.mkdtemp(prefix="saeembed-sql-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def files_of(con: Any, corpus_id: int) -> tuple[str | None, list[str]]:
    if not registered_files(con):
        return None, []
    rows = con.execute("SELECT location, files FROM parquet_corpora WHERE corpus_id = ?", [int(corpus_id)]).fetchall()
    return (rows[0][0], json.loads(rows[0][1])) if rows else (None, [])


def delete_files(location: str, files: list[str]) -> None:
    """Delete a dropped corpus' files (only the registered ones) and its folder once empty."""
    for f in files:
        Path(f).unlink(missing_ok=True)
    try:
        Path(location).rmdir()
    except OSError:
        log.warning("kept %s: it holds files saeembed did not write", location)


__all__ = ["SCHEMA", "keep_as_parquet", "attach", "registered_files", "files_of", "delete_files", "location_for"]
