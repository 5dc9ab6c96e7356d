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

The registration is data in a file someone may have handed over, so it is never trusted as a list
of paths: a read connection uses only files named as this module names them
(``<name>-c<id>-<hex>/data_N.parquet``) that look like whole Parquet files (magic bytes and footer,
two small reads each); ``drop`` deletes only such files inside the Parquet folder the user names
(``--parquet-dir``, default ``STORE.parquet``). A corpus whose registration or files fail these
checks is left out of the ``activations`` view (``corpora`` and ``sql`` warn about it); using it by
name is one line naming the fix, and every other corpus keeps working.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import stat
import uuid
import weakref
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fsutil import atomic_folder
from ..uri import is_uri
from .stats import compute as compute_stats
from .stats import write as write_stats
from .strata import keep_strata

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
_DATA_FILE = re.compile(r"data_\d+\.parquet")  # DuckDB's names for the files of one COPY ... FILE_SIZE_BYTES
PARQUET_MAGIC = b"PAR1"
FOLDER_PATTERN = "<name>-c<corpus id>-<8 hex digits>/data_N.parquet"


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def location_for(store_path: str | Path, parquet_dir: str | None) -> Path:
    """The folder that receives the corpus' Parquet folder; refuses URIs and glob characters (DuckDB
    expands globs in file names it reads)."""
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
    where = location_for(store_path, parquet_dir)
    where.mkdir(parents=True, exist_ok=True)
    final = where / f"{name}-c{corpus_id}-{uuid.uuid4().hex[:8]}"
    con.register("_keep_shards", shards)
    pos = ", peak_pos::INTEGER AS peak_pos" if positions else ""
    with atomic_folder(final) as tmp:  # DuckDB writes the folder; it appears under its name only when complete
        con.execute(f"""COPY (SELECT ({int(lo)}::BIGINT | row_idx)::BIGINT AS doc_id, feature_id::INTEGER AS feature_id,
                                     value::FLOAT AS value, total::FLOAT AS total, n_active::INTEGER AS n_active{pos}
                              FROM _keep_shards ORDER BY feature_id, row_idx)
                        TO {_sql_str(str(tmp))}
                        (FORMAT parquet, COMPRESSION zstd, FILE_SIZE_BYTES '{FILE_SIZE}',
                         ROW_GROUP_SIZE {ROW_GROUP})""")
        con.unregister("_keep_shards")
    try:
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
            keep_strata(con, corpus_id)
        finally:
            con.execute("DROP VIEW IF EXISTS temp.main.activations")
    except BaseException:
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


def _has_registry(con: Any) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'parquet_corpora' "
                            "AND table_schema = 'main' AND table_catalog = current_database()").fetchall()[0][0])


def registration_problem(name: str | None, corpus_id: int, location: Any, files: Any,
                         root: Path | None = None) -> str | None:
    """Why a registration does not name files this module wrote for that corpus, or None.

    Checked: the folder is absolute, free of glob characters (DuckDB would expand them), named
    ``<name>-c<id>-<hex>``, and (with ``root``) lies directly in ``root`` after resolving links and
    ``..``; every listed file is ``data_N.parquet`` directly in that folder.
    """
    try:
        listed = json.loads(files)
    except (TypeError, ValueError):
        listed = None
    if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed):
        return "its registration does not hold a list of file paths"
    folder_name = re.escape(str(name)) + rf"-c{int(corpus_id)}-[0-9a-f]{{8}}"
    loc = Path(str(location))
    if (name is None or not loc.is_absolute() or _GLOB.search(str(loc))
            or not re.fullmatch(folder_name, loc.name)):
        return f"its registered folder {location} is not one saeembed names ({FOLDER_PATTERN})"
    if root is not None and loc.resolve().parent != Path(root).resolve():
        return f"its registered folder {location} does not lie in the Parquet folder {root}"
    for f in listed:
        if Path(f).parent != loc or not _DATA_FILE.fullmatch(Path(f).name):
            return f"its registration lists {f}, which is not one of its {loc.name}/data_N.parquet files"
    return None


def file_problem(path: str) -> str | None:
    """Why ``path`` is not a whole Parquet file (missing, empty, truncated, not Parquet), or None.

    Cheap on purpose (a stat and two reads of 4 and 8 bytes): it runs for every registered file
    whenever a read connection opens. A Parquet file starts and ends with ``PAR1`` and its last 8
    bytes hold the footer's length, so a truncated file fails it.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_size == 0:
            return "empty"
        with open(path, "rb") as fh:
            head = fh.read(4)
            fh.seek(max(st.st_size - 8, 0))
            tail = fh.read(8)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    footer = int.from_bytes(tail[:4], "little") if len(tail) == 8 else -1
    if head != PARQUET_MAGIC or tail[4:] != PARQUET_MAGIC or not 0 < footer <= st.st_size - 12:
        return "truncated or not a Parquet file"
    return None


def _registrations(con: Any) -> list[tuple[int, str | None, Any, Any]]:
    if not _has_registry(con):
        return []
    return con.execute("SELECT p.corpus_id, c.name, p.location, p.files FROM parquet_corpora p "
                       "LEFT JOIN corpora c USING (corpus_id) ORDER BY p.corpus_id").fetchall()


def readable_files(con: Any) -> tuple[list[str], dict[int, str]]:
    """(files a read connection may use, {corpus_id: why that corpus cannot be read})."""
    usable: list[str] = []
    problems: dict[int, str] = {}
    for corpus_id, name, location, files in _registrations(con):
        shown = repr(name) if name is not None else f"#{corpus_id}"
        why = registration_problem(name, corpus_id, location, files)
        if why:
            problems[corpus_id] = (f"corpus {shown} cannot be read: {why}; drop it and leave the listed files "
                                   f"alone (saeembed drop {name} --keep-files)")
            continue
        listed = json.loads(files)
        bad = next(((f, p) for f in listed if (p := file_problem(f))), None)
        if bad:
            problems[corpus_id] = (f"corpus {shown} cannot be read: its Parquet file {bad[0]} is {bad[1]}; "
                                   f"drop it (saeembed drop {name}) or re-encode it")
            continue
        usable.extend(listed)
    return usable, problems


# the unreadable corpora of each open read connection (DuckDB connections take no attributes)
_UNREADABLE: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()


def check_readable(con: Any, corpus_id: int) -> None:
    """Raise the one line of a corpus that this connection had to leave out, when it is used."""
    problem = _UNREADABLE.get(con, {}).get(int(corpus_id))
    if problem:
        raise UserError(problem)


def unreadable_corpora(con: Any) -> dict[int, str]:
    """{corpus_id: one line} of the corpora this read connection left out of ``activations``."""
    return dict(_UNREADABLE.get(con, {}))


def attach(con: Any, external_access: bool) -> None:
    """Give a read-only connection the ``activations`` view over table + registered files; without
    external access, only the registered files may be read and the configuration is locked.

    A corpus whose registration or files fail the checks is left out, so one damaged corpus never
    breaks the others; :func:`check_readable` refuses it by name, and the ``corpora`` and ``sql``
    commands warn about it (:func:`unreadable_corpora`).
    """
    files, problems = readable_files(con)
    _UNREADABLE[con] = problems
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


def files_of(con: Any, corpus_id: int) -> tuple[str | None, Any]:
    """(location, files as registered: JSON text) of a Parquet-kept corpus; (None, None) otherwise."""
    if not _has_registry(con):
        return None, None
    rows = con.execute("SELECT location, files FROM parquet_corpora WHERE corpus_id = ?", [int(corpus_id)]).fetchall()
    return (rows[0][0], rows[0][1]) if rows else (None, None)


def check_deletable(name: str, corpus_id: int, location: Any, files: Any, root: Path) -> list[str]:
    """The registered files of a corpus that ``drop`` may delete; refuses (one line, before anything
    is deleted) a registration that names anything but this module's files inside ``root``."""
    why = registration_problem(name, corpus_id, location, files, root)
    if why:
        raise UserError(f"refusing to delete the files of corpus {name!r}: {why}. If it was encoded with "
                        "--parquet-dir DIR, pass the same --parquet-dir; or pass --keep-files to drop the corpus "
                        "and leave every file alone")
    return json.loads(files)


def delete_files(location: str, files: list[str]) -> list[str]:
    """Delete a dropped corpus' files (only those :func:`check_deletable` passed) and its folder
    once empty; returns the files deleted (a file already gone is reported, not counted)."""
    deleted, missing = [], 0
    for f in files:
        try:
            Path(f).unlink()
            deleted.append(f)
        except FileNotFoundError:
            missing += 1
        except OSError as exc:
            log.warning("kept %s: %s", f, exc.strerror or exc)
    if missing:
        log.warning("%d of the corpus' %d Parquet file(s) were already missing", missing, len(files))
    try:
        Path(location).rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        log.warning("kept %s: it holds files saeembed did not write", location)
    return deleted


__all__ = ["SCHEMA", "keep_as_parquet", "attach", "files_of", "delete_files", "location_for",
           "registration_problem", "file_problem", "readable_files", "check_readable", "unreadable_corpora",
           "check_deletable", "FOLDER_PATTERN"]
