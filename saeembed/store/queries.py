"""Named SQL: the queries the store and the analyses run, read from the repository's ``queries/`` folder.

One documented file per query, so users can read and reuse exactly what saeembed runs; the text is read
at run time, never copied into Python.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ..errors import UserError

if TYPE_CHECKING:
    from .handle import Store

# The SQL lives in the repository's queries/ folder (saeembed/store/queries.py → ../../queries).
# A wheel has no repository root, so the package's own saeembed/queries/ (declared as package data
# in pyproject.toml) is the fallback; SAEEMBED_QUERIES overrides both, for users editing a query.
QUERIES_DIR = Path(__file__).resolve().parents[2] / "queries"
PACKAGED_QUERIES_DIR = Path(__file__).resolve().parents[1] / "queries"


def query_dirs() -> list[Path]:
    """Where named queries are looked up, first match wins."""
    dirs = [Path(os.environ["SAEEMBED_QUERIES"])] if os.environ.get("SAEEMBED_QUERIES") else []
    return dirs + [QUERIES_DIR, PACKAGED_QUERIES_DIR]


@cache
def _read_query(name: str, dirs: tuple[Path, ...]) -> str:
    for d in dirs:
        path = d / f"{name}.sql"
        if path.is_file():
            return path.read_text()
    raise UserError(f"query file {name}.sql is not in {', '.join(map(str, dirs))}; reinstall saeembed "
                    "(the wheel ships saeembed/queries/) or set SAEEMBED_QUERIES to a folder holding it")


def load_query(name: str) -> str:
    """The text of ``queries/<name>.sql`` (see :func:`query_dirs` for the lookup order)."""
    return _read_query(name, tuple(query_dirs()))


def run_query(store: Store, name: str, params: dict[str, Any]) -> pl.DataFrame:
    """Run a named query with named parameters on the store's read-only connection."""
    return store.sql(load_query(name), params)
