"""Render a polars frame for the terminal or for machines (``--format``).

json is a list of row objects and nothing else on stdout, so scripts can pipe it straight into
``jq`` or ``json.loads``. Messages and progress always go to stderr.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Any

import click
import polars as pl

from ..errors import UserError
from ..fsutil import atomic_write_parquet, atomic_write_text
from ..store.guard import check_output_path

FORMATS = ("table", "csv", "tsv", "json", "ndjson", "parquet")
FORMAT_HELP = ("table for people; csv, tsv, json (a list of row objects), ndjson (one object per line) or "
               "parquet (needs --output) for programs")
HTML_HELP = "; html: a self-contained report page that opens offline (needs --output FILE.html)"


def checked_output(f: Any) -> Any:
    """Check ``--output`` against the command's ``--store`` before the command does any work: an
    output never lands on the store, its WAL, its side folders or its registered Parquet files."""
    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("output"):
            check_output_path(kwargs["output"], kwargs.get("store"))
        return f(*args, **kwargs)

    return run


def output_options(fn: Any = None, *, html: bool = False) -> Any:
    """``--format`` and ``--output`` for a command that prints a frame (every listing command);
    ``html=True`` adds the report page format (the four analyses)."""
    def decorate(f: Any) -> Any:
        f = checked_output(f)
        f = click.option("--output", "output", type=click.Path(dir_okay=False),
                         help="write the result to FILE instead of stdout (needed for --format parquet and html)"
                         if html else "write the result to FILE instead of stdout (needed for --format parquet)")(f)
        return click.option("--format", "fmt", type=click.Choice(FORMATS + (("html",) if html else ())),
                            default="table", show_default=True, help=FORMAT_HELP + (HTML_HELP if html else ""))(f)

    return decorate(fn) if fn is not None else decorate


def _jsonable(value: Any) -> Any:
    """Values JSON can hold: NaN becomes null, ±inf the strings "inf"/"-inf" (JSON has no
    non-finite numbers; ``Infinity`` would make the whole output unparseable)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if value != value else ("inf" if value > 0 else "-inf")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def emit(df: pl.DataFrame, fmt: str = "table", output: str | Path | None = None, max_rows: int = 50,
         max_width: int = 60) -> None:
    """Write ``df`` to stdout (or ``output``, atomically: a failed write never leaves half a file) in
    the requested format."""
    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet needs --output FILE")
    if not output:
        click.echo(render(df, fmt, max_rows=max_rows, max_width=max_width).rstrip("\n"))
        return
    path = check_output_path(output)
    try:
        if fmt == "parquet":
            atomic_write_parquet(df, path)
        else:
            text = render(df, fmt, max_rows=max_rows, max_width=max_width)
            atomic_write_text(path, text + ("\n" if text and not text.endswith("\n") else ""))
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}; pick a writable --output") from None
    print(f"wrote {df.height} rows to {output}", file=sys.stderr)


def render(df: pl.DataFrame, fmt: str, max_rows: int = 50, max_width: int = 60) -> str:
    """The text of ``df`` in a text format (table, csv, tsv, json, ndjson)."""
    if fmt == "json":
        return json.dumps([_jsonable(r) for r in df.to_dicts()], ensure_ascii=False, default=str, allow_nan=False)
    if fmt == "ndjson":
        return "".join(json.dumps(_jsonable(r), ensure_ascii=False, default=str, allow_nan=False) + "\n"
                       for r in df.to_dicts())
    if fmt in ("csv", "tsv"):
        return csv_text(df, separator="\t" if fmt == "tsv" else ",")
    if fmt != "table":
        raise click.UsageError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    return table(df, max_rows=max_rows, max_width=max_width)


def csv_text(df: pl.DataFrame, separator: str = ",") -> str:
    """CSV with nested columns (lists, structs) written as JSON text in their cell: CSV has no
    nested values, and a JSON cell is what pandas/polars users can parse back."""
    nested = [c for c, t in df.schema.items() if isinstance(t, (pl.List, pl.Struct, pl.Array))]
    flat = df.with_columns([
        pl.Series(c, [None if v is None else json.dumps(_jsonable(v), ensure_ascii=False, default=str)
                      for v in df[c].to_list()], pl.String)
        for c in nested])
    return flat.write_csv(separator=separator)


def _cell(value: Any, width: int) -> str:
    if value is None:
        s = ""
    elif isinstance(value, float):
        s = f"{value:.4g}"
    else:
        s = str(value)
    s = " ".join(s.split())
    return s if len(s) <= width else s[: width - 1] + "…"


def table(df: pl.DataFrame, max_rows: int = 50, max_width: int = 60) -> str:
    """A plain aligned table: readable in any terminal, no box-drawing noise."""
    if df.width == 0:
        return "(no columns)"
    rows = [[_cell(v, max_width) for v in r] for r in df.head(max_rows).iter_rows()]
    cols = df.columns
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    numeric = [df.schema[c].is_numeric() for c in cols]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    out = [line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows]
    if df.height > max_rows:
        out.append(f"… {df.height - max_rows} more rows (use --format csv or json, or --output FILE, for all)")
    if df.height == 0:
        out.append("(no rows)")
    return "\n".join(out)
