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
from ..fmt import fmt_value
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


def output_options(fn: Any = None, *, html: bool = False, quiet_default: bool = False) -> Any:
    """``--format`` and ``--output`` for a command that prints a frame (every listing command);
    ``html=True`` adds the report page format (the four analyses). ``quiet_default``: the command's
    result is printed only when ``--format`` or ``--output`` asks for it (encode, whose work is the
    store; its summary goes to stderr), so chained commands keep stdout for their own results."""
    def decorate(f: Any) -> Any:
        f = checked_output(f)
        f = click.option("--output", "output", type=click.Path(dir_okay=False),
                         help="write the result to FILE instead of stdout (needed for --format parquet and html)"
                         if html else "write the result to FILE instead of stdout (needed for --format parquet)")(f)
        if quiet_default:
            return click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                                help=FORMAT_HELP + " (default: nothing on stdout; table with --output)")(f)
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
         max_width: int = 60, caption: list[str] | None = None) -> None:
    """Write ``df`` to stdout (or ``output``, atomically: a failed write never leaves half a file) in
    the requested format; ``caption`` lines head a table (machine formats carry only the rows)."""
    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet needs --output FILE")
    if not output:
        click.echo(render(df, fmt, max_rows=max_rows, max_width=max_width, caption=caption).rstrip("\n"))
        return
    path = check_output_path(output)
    try:
        if fmt == "parquet":
            atomic_write_parquet(df, path)
        else:
            text = render(df, fmt, max_rows=max_rows, max_width=max_width, caption=caption)
            atomic_write_text(path, text + ("\n" if text and not text.endswith("\n") else ""))
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}; pick a writable --output") from None
    print(f"wrote {df.height} rows to {output}", file=sys.stderr)


def render(df: pl.DataFrame, fmt: str, max_rows: int = 50, max_width: int = 60,
           caption: list[str] | None = None) -> str:
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
    return table(df, max_rows=max_rows, max_width=max_width, caption=caption)


def csv_text(df: pl.DataFrame, separator: str = ",") -> str:
    """CSV with nested columns (lists, structs) written as JSON text in their cell: CSV has no
    nested values, and a JSON cell is what pandas/polars users can parse back."""
    nested = [c for c, t in df.schema.items() if isinstance(t, (pl.List, pl.Struct, pl.Array))]
    flat = df.with_columns([
        pl.Series(c, [None if v is None else json.dumps(_jsonable(v), ensure_ascii=False, default=str)
                      for v in df[c].to_list()], pl.String)
        for c in nested])
    return flat.write_csv(separator=separator)


MAX_CELL_LINES = 4  # a wrapped cell shows at most this many lines, the last ending in "…"
MIN_TEXT_WIDTH = 12  # text columns are not squeezed below this to fit the terminal


def table_width() -> int:
    """The width tables are fitted to: the terminal's, else ``COLUMNS``, else 120."""
    import shutil

    return max(60, shutil.get_terminal_size((120, 24)).columns)


def _cell(value: Any, column: str = "") -> str:
    return " ".join(fmt_value(value, column).split())


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters (words kept whole where they fit)."""
    import textwrap

    lines = textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]
    if len(lines) > MAX_CELL_LINES:
        lines = lines[:MAX_CELL_LINES]
        lines[-1] = lines[-1][: width - 1] + "…"
    return lines


def _fit(widths: list[int], wrappable: list[bool], total: int) -> list[int]:
    """Narrow the widest wrappable columns until the row fits ``total`` characters (or none can shrink)."""
    widths = list(widths)
    while sum(widths) + 2 * (len(widths) - 1) > total:
        shrinkable = [i for i, ok in enumerate(wrappable) if ok and widths[i] > MIN_TEXT_WIDTH]
        if not shrinkable:
            break
        i = max(shrinkable, key=lambda j: widths[j])
        excess = sum(widths) + 2 * (len(widths) - 1) - total
        second = max((widths[j] for j in shrinkable if j != i), default=MIN_TEXT_WIDTH)
        # down to the next widest (so the widest columns shrink together), at least one character
        widths[i] = max(MIN_TEXT_WIDTH, min(widths[i] - 1, max(widths[i] - excess, second)))
    return widths


def table(df: pl.DataFrame, max_rows: int = 50, max_width: int = 60, width: int | None = None,
          caption: list[str] | None = None) -> str:
    """A plain aligned table: readable in any terminal, no box-drawing noise.

    Figures are rounded and lists joined (:func:`saeembed.fmt.fmt_value`); text wider than
    ``max_width`` or than the terminal allows wraps onto more lines of its cell; numbers never wrap.
    ``caption`` lines (what was selected, what was controlled) come first.
    """
    if df.width == 0:
        return "(no columns)"
    cols = df.columns
    rows = [[_cell(v, c) for v, c in zip(r, cols)] for r in df.head(max_rows).iter_rows()]
    numeric = [df.schema[c].is_numeric() for c in cols]
    natural = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    widths = [n if num else min(n, max(max_width, len(c))) for n, num, c in zip(natural, numeric, cols)]
    total = width or table_width()
    widths = _fit(widths, [not num for num in numeric], total)
    widths = [max(w, len(c)) if num else w for w, num, c in zip(widths, numeric, cols)]

    def lines(cells: list[str]) -> list[str]:
        parts = [[c] if num else _wrap(c, w) for c, w, num in zip(cells, widths, numeric)]
        height = max(len(p) for p in parts)
        return ["  ".join((p[k] if k < len(p) else "").rjust(w) if num else (p[k] if k < len(p) else "").ljust(w)
                          for p, w, num in zip(parts, widths, numeric)).rstrip() for k in range(height)]

    import textwrap

    out = [wrapped for line in caption or [] for wrapped in textwrap.wrap(line, total) or [""]]
    out += lines([c[:w] if len(c) > w else c for c, w in zip(cols, widths)]) + lines(["-" * w for w in widths])
    for r in rows:
        out += lines(r)
    if df.height > max_rows:
        out.append(f"… {df.height - max_rows} more rows (use --format csv or json, or --output FILE, for all)")
    if df.height == 0:
        out.append("(no rows)")
    return "\n".join(out)
