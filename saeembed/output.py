"""Render a polars frame for the terminal or for machines (``--format``).

json is a list of row objects and nothing else on stdout, so scripts can pipe it straight into
``jq`` or ``json.loads``. Messages and progress always go to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import polars as pl

FORMATS = ("table", "csv", "json", "parquet")


def format_option(with_parquet: bool = False, with_html: bool = False):  # noqa: ANN201 - click decorator
    choices = (FORMATS if with_parquet else FORMATS[:3]) + (("html",) if with_html else ())
    return click.option("--format", "fmt", type=click.Choice(choices), default="table", show_default=True,
                        help="table for people; csv/json" + ("/parquet" if with_parquet else "") + " for programs"
                        + ("; html: a self-contained report page (with --output FILE.html)" if with_html else ""))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def emit(df: pl.DataFrame, fmt: str = "table", output: str | Path | None = None, max_rows: int = 50,
         max_width: int = 60) -> None:
    """Write ``df`` to stdout (or ``output``) in the requested format."""
    if fmt == "parquet":
        if output is None:
            raise click.UsageError("--format parquet needs --output FILE")
        df.write_parquet(output)
        print(f"wrote {df.height} rows to {output}", file=sys.stderr)
        return
    if fmt == "json":
        text = json.dumps([_jsonable(r) for r in df.to_dicts()], ensure_ascii=False, default=str)
    elif fmt == "csv":
        flat = df.with_columns([pl.col(c).cast(pl.String) for c, t in df.schema.items()
                                if isinstance(t, (pl.List, pl.Struct, pl.Array))])
        text = flat.write_csv()
    else:
        text = table(df, max_rows=max_rows, max_width=max_width)
    if output:
        Path(output).write_text(text + ("\n" if not text.endswith("\n") else ""))
        print(f"wrote {df.height} rows to {output}", file=sys.stderr)
    else:
        click.echo(text.rstrip("\n"))


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
        out.append(f"… {df.height - max_rows} more rows (use --format csv or json for all)")
    if df.height == 0:
        out.append("(no rows)")
    return "\n".join(out)
