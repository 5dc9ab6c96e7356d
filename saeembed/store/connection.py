"""Opening a store: refuse what is not one, create it whole or not at all, wait (bounded) for locks."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import duckdb

from ..errors import UserError
from .schema import ALL_SCHEMAS, DUCKDB_MAGIC, MIGRATIONS

log = logging.getLogger(__name__)


def check_store_file(path: Path) -> bool:
    """True when ``path`` is an existing DuckDB database, False when there is nothing there yet.

    Refuses anything else: DuckDB would report "stored" into a .parquet file given as --store and
    keep nothing. A 0-byte file (left by a crash during creation) holds no data and counts as new.
    """
    if path.is_dir():
        raise UserError(f"store {path} is a directory; pass the path of a .duckdb file")
    if not path.exists():
        return False
    if path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[8:12] != DUCKDB_MAGIC:
        raise UserError(f"{path} exists and is not a DuckDB store; pass a new file name for a new store or the "
                        "path of an existing store")
    return True


def _create(path: Path, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """Create a new store file with the schema, or leave nothing behind (disk full, no permission)."""
    if path.exists() and path.stat().st_size == 0:  # the empty leftover of an earlier failed creation
        path.unlink()
    con = None
    try:
        con = duckdb.connect(str(path), config=config)
        for schema in ALL_SCHEMAS:
            con.execute(schema)
        con.execute("CHECKPOINT")
        return con
    except (duckdb.Error, OSError) as exc:
        if con is not None:
            con.close()
        for leftover in (path, Path(f"{path}.wal")):
            leftover.unlink(missing_ok=True)
        raise UserError(f"cannot create store {path}: {str(exc).splitlines()[0]}; check free disk space and "
                        "permissions") from None


DEFAULT_WAIT_S = 120.0  # how long a command waits for another process to release the store


def lock_wait_seconds(wait: float | None = None) -> float:
    """``wait`` if given, else ``SAEEMBED_WAIT`` (seconds), else :data:`DEFAULT_WAIT_S`."""
    if wait is not None:
        return max(0.0, float(wait))
    env = os.environ.get("SAEEMBED_WAIT", "").strip()
    try:
        return max(0.0, float(env)) if env else DEFAULT_WAIT_S
    except ValueError:
        raise UserError(f"SAEEMBED_WAIT={env!r} is not a number of seconds; set it to e.g. 60") from None


def open_waiting(path: Path, read_only: bool, config: dict[str, Any], wait: float) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, retried while another process holds a conflicting lock, for at most ``wait`` s.

    Why: DuckDB allows one writer, or many readers, per file across processes. A second writer (or a
    reader during an ingest) used to fail at once, sometimes after hours of encoding; now it waits
    its turn, says so once on stderr, and gives up with one line when the wait is over.
    """
    deadline = time.monotonic() + wait
    delay, told = 0.05, False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            msg = str(exc).splitlines()[0]
            if "lock" not in msg.lower():
                raise UserError(f"cannot open store {path}: {msg}; check the path") from None
            if time.monotonic() >= deadline:
                raise UserError(f"store {path} is still in use by another process after {wait:.0f} s ({msg}); "
                                "let it finish, or wait longer with --wait SECONDS / SAEEMBED_WAIT") from None
            if not told:
                log.warning("waiting up to %.0f s for store %s: another process is using it", wait, path)
                told = True
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)


def connect(path: str | Path, read_only: bool = False, external_access: bool = True,
            wait: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open a store, waiting (bounded) for other processes' locks.

    Read-only opens refuse a missing file instead of creating an empty one; any existing file that
    is not a DuckDB database is refused.
    """
    path = Path(path)
    exists = check_store_file(path)
    if read_only and not exists:
        raise UserError(f"store {path} does not exist; encode a corpus into it first "
                        f"(saeembed encode ... --store {path})")
    config: dict[str, Any] = {}
    if not external_access and not read_only:
        config["enable_external_access"] = False
    if not exists:
        return _create(path, config)
    con = open_waiting(path, read_only, config, lock_wait_seconds(wait))
    if not read_only:
        for schema in ALL_SCHEMAS:
            con.execute(schema)
        con.execute(MIGRATIONS)
    else:
        # Parquet-kept corpora join the table in a temporary `activations` view; without external
        # access only their registered files stay readable (see saeembed.store.parquet)
        from .parquet import attach

        try:
            attach(con, external_access)
        except BaseException:
            con.close()
            raise
    return con
