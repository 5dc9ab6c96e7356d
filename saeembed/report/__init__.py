"""Reports: an analysis result as a page to look at — charts, a sortable table, highlighted examples.

The analyses keep returning plain polars frames; :func:`report` turns one into a :class:`Report`
(``.save(path)`` writes one self-contained HTML file that opens offline, ``.df`` is the frame,
and in Jupyter it displays itself: charts as SVG, examples with the activating tokens shaded)::

    from saeembed.analysis import diff
    from saeembed.report import report     # or saeembed.show(df, store)
    df = diff("demo.duckdb", ["negative", "positive"])     # still a polars DataFrame
    report(df, "demo.duckdb").save("diff.html")             # or just `report(df, store)` in a notebook

Why a wrapper rather than a frame subclass: code that expects a polars DataFrame keeps getting
exactly that, and looking at a result (which reads example documents and, with ``shade``,
recomputes their token activations with the reader) stays an explicit, separate step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from ..errors import UserError
from ..store.guard import check_output_path
from ..store.handle import as_store
from .assets import require_faces
from .page import NO_LINKS, Links, Report, Section
from .tables import frame_table

if TYPE_CHECKING:
    from ..store.handle import Store

KINDS = ("diff", "correlate", "cluster", "search", "table")
_SIGNATURES = {"diff": {"target", "freq_target", "freq_other", "examples_target"},
               "correlate": {"feature_a", "feature_b", "npmi"},
               "cluster": {"cluster", "top_features", "central_docs", "doc_ids"},
               "search": {"rank", "doc_id", "score", "text"}}


def detect_kind(df: pl.DataFrame) -> str:
    """Which analysis produced ``df`` (by its columns); ``table`` for any other frame."""
    cols = set(df.columns)
    for kind, needed in _SIGNATURES.items():
        if needed <= cols:
            return kind
    return "table"


def build_section(store: Store, df: pl.DataFrame, kind: str, *, corpus: str | None = None, examples: int = 3,
                  example_rows: int = 10, links: Links = NO_LINKS, shade: bool = False) -> Section:
    """The section of one result; shared by report files, notebooks and the browser."""
    if kind == "diff":
        from .diff_view import diff_section

        return diff_section(store, df, examples, example_rows, links, shade)
    if kind == "correlate":
        from .correlate_view import correlate_section

        return correlate_section(store, df, corpus, examples, example_rows, links, shade)
    if kind == "cluster":
        from .cluster_view import cluster_section

        return cluster_section(store, df, examples, links, shade=shade)
    if kind == "search":
        from .search_view import search_section

        return search_section(store, df, links, shade)
    return Section("Result", [], [], [("Rows", frame_table(df))])


def report(df: pl.DataFrame, store: Store | str | Path, *, kind: str | None = None, corpus: str | None = None,
           examples: int = 3, example_rows: int = 10, title: str | None = None,
           notes: list[str] | None = None, shade: bool = False) -> Report:
    """A :class:`Report` of an analysis result (``kind`` is detected from the columns).

    ``examples``: example documents per row, shown for the first ``example_rows`` rows, each
    latent's strongest token shaded from the store. ``shade``: every token shaded by its
    activation instead, recomputed with the reader (a forward per example document). ``corpus``
    names the corpus a ``correlate`` result came from (the frame does not say; without it there
    are no example documents). ``notes`` are extra lines under the title (e.g. the query).
    """
    require_faces()
    if not isinstance(df, pl.DataFrame):
        raise UserError(f"report() takes a polars DataFrame from an analysis, not {type(df).__name__}")
    kind = kind or detect_kind(df)
    if kind not in KINDS:
        raise UserError(f"unknown report kind {kind!r}; use one of {', '.join(KINDS)}")
    if examples < 0 or example_rows < 0:
        raise UserError("examples and example_rows must be >= 0")
    st = as_store(store)
    section = build_section(st, df, kind, corpus=corpus, examples=examples, example_rows=example_rows, shade=shade)
    section.lines = list(notes or []) + section.lines
    return Report(kind, title or f"saeembed {kind}", [section], df)


def write_report(df: pl.DataFrame, store: Store | str | Path, output: str | Path | None, **options: object) -> Path:
    """``--format html``: write the report of ``df`` to ``output`` (required)."""
    if not output:
        raise UserError("--format html writes a file; add --output FILE.html")

    check_output_path(output, store if isinstance(store, (str, Path)) else store.path)
    return report(df, store, **options).save(output)  # type: ignore[arg-type]


__all__ = ["report", "write_report", "Report", "detect_kind", "build_section", "KINDS"]
