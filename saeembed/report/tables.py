"""Result frames as sortable HTML tables: formatted text for people, raw values to sort by."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import polars as pl

from ..fmt import fmt_value
from ..highlight.views import DocView


@dataclass
class Cell:
    text: str = ""
    sort: Any = None  # the value sortable-tablesort orders by (data-sort); None: the text
    href: str | None = None
    doc: DocView | None = None  # a highlighted snippet instead of text
    numeric: bool = False


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    note: str = ""
    numeric: list[bool] = field(default_factory=list)


def _sort_key(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return None


def frame_table(df: pl.DataFrame, columns: list[str] | None = None, *, max_rows: int | None = None,
                links: dict[str, Callable[[dict], str | None]] | None = None,
                docs: dict[str, Callable[[dict], DocView | None]] | None = None,
                headers: dict[str, str] | None = None) -> Table:
    """A :class:`Table` of ``df`` (``columns`` in order; missing ones skipped).

    ``links[col](row)`` makes a cell a link; ``docs[col](row)`` replaces it by a highlighted
    document; ``headers`` renames columns for display.
    """
    cols = [c for c in (columns or df.columns) if c in df.columns or (docs and c in docs)]
    links, docs, headers = links or {}, docs or {}, headers or {}
    shown = df.head(max_rows) if max_rows is not None else df
    numeric = [c in df.columns and df.schema[c].is_numeric() for c in cols]
    rows = []
    for r in shown.iter_rows(named=True):
        cells = []
        for c, num in zip(cols, numeric):
            if c in docs:
                cells.append(Cell(doc=docs[c](r)))
                continue
            v = r.get(c)
            cells.append(Cell(fmt_value(v, c), _sort_key(v), links[c](r) if c in links else None, numeric=num))
        rows.append(cells)
    note = f"first {shown.height} of {df.height} rows" if shown.height < df.height else f"{df.height} rows"
    return Table([headers.get(c, c) for c in cols], rows, note, numeric)


__all__ = ["Cell", "Table", "frame_table", "fmt_value"]
