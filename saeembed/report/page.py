"""What a report is made of (sections of charts, tables and highlighted examples) and its output.

A :class:`Report` wraps one result frame. It renders three ways from the same templates:
``html()`` a self-contained page (scripts inlined, opens offline), ``_repr_html_()`` a notebook
view (charts as static SVG, no scripts, so notebooks stay small and render anywhere), and the
browser's pages, which reuse :class:`Section` with scripts served from ``/assets/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import UserError
from ..fsutil import atomic_write_text
from ..highlight.views import DocView
from ..store.guard import check_output_path
from .assets import page_css, sortable_js, vega_bundle
from .tables import Table


class Links:
    """Where a latent or a document links to: nowhere in a report file; the browser's pages override."""

    def latent(self, feature_id: int) -> str | None:
        return None

    def doc(self, doc_id: int, feature_id: int | None = None) -> str | None:
        return None


NO_LINKS = Links()


@dataclass
class ChartView:
    title: str
    caption: str
    chart: Any  # an Altair chart

    @cached_property
    def spec(self) -> dict:
        return self.chart.to_dict()

    def svg(self) -> str:
        import vl_convert
        from altair.utils._importers import vl_version_for_vl_convert

        return vl_convert.vegalite_to_svg(self.spec, vl_version=vl_version_for_vl_convert(), allowed_base_urls=[])


@dataclass
class Example:
    caption: str
    doc: DocView
    href: str | None = None


@dataclass
class ExampleGroup:
    title: str
    examples: list[Example]
    href: str | None = None


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    charts: list[ChartView] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    examples: list[ExampleGroup] = field(default_factory=list)
    legend: list[str] = field(default_factory=list)  # what the highlight colours mean


@lru_cache(maxsize=1)
def environment():
    """The template environment of reports and notebook views (the browser adds its own pages)."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("saeembed.report", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


class Report:
    """A rendered view of one analysis result; ``.df`` is the untouched polars frame."""

    def __init__(self, kind: str, title: str, sections: list[Section], df: pl.DataFrame) -> None:
        self.kind = kind
        self.title = title
        self.sections = sections
        self.df = df

    def html(self) -> str:
        """One self-contained HTML page: Vega and the table sorter inlined, no network needed."""
        return environment().get_template("report.html").render(
            title=self.title, sections=self.sections, inline=True, css=page_css(), vega_js=vega_bundle(),
            sortable_js=sortable_js())

    def save(self, path: str | Path) -> Path:
        """Write :meth:`html` to ``path`` (atomically: a half-written report never replaces a good one)."""
        path = check_output_path(path)
        page = self.html()
        try:
            atomic_write_text(path, page)
        except OSError as exc:
            raise UserError(f"cannot write the report to {path}: {exc.strerror or exc}; pick a writable path") from None
        return path

    def _repr_html_(self) -> str:
        return environment().get_template("fragment.html").render(title=self.title, sections=self.sections,
                                                                  css=page_css())

    def __repr__(self) -> str:
        return f"<saeembed Report {self.kind}: {self.df.height} rows; .df for the frame, .save(path) for HTML>"


__all__ = ["Links", "NO_LINKS", "Report", "Section", "ChartView", "Example", "ExampleGroup", "environment"]
