"""The JavaScript and CSS a page needs, from the libraries that produce them, never from a CDN.

- Vega, Vega-Lite and Vega-Embed come as one bundle from ``vl-convert-python``
  (``vl_convert.javascript_bundle``), which is what Altair itself inlines for offline HTML; the
  bundle matches the Vega-Lite version Altair writes its specs for.
- Table sorting is ``sortable-tablesort`` (npm, public domain, 1.7 kB), vendored unmodified under
  ``static/vendor/`` with its licence, because no Python package ships a table sorter that small.
- ``static/report.css`` is ours: layout and the token-highlight colours.

Reports inline all of it (one file that opens offline); the browser serves the same strings from
memory under ``/assets/`` (no endpoint reads files on request).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from ..errors import UserError

FACES_HINT = "pip install 'saeembed[faces]'"


def require_faces() -> None:
    """Fail with the install command when the optional display libraries are missing."""
    try:
        import altair  # noqa: F401
        import vl_convert  # noqa: F401
    except ImportError:
        raise UserError(f"HTML reports, charts and the browser need the display extra: {FACES_HINT}") from None


def _static(name: str) -> str:
    # utf-8-sig: the vendored stylesheet starts with a byte-order mark
    return resources.files("saeembed.report").joinpath("static", name).read_text(encoding="utf-8-sig")


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega + Vega-Lite + Vega-Embed as one classic script defining ``window.vegaEmbed``."""
    require_faces()
    import vl_convert
    from altair.utils._importers import vl_version_for_vl_convert

    return vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert())


@lru_cache(maxsize=1)
def sortable_js() -> str:
    return _static("vendor/sortable.min.js")


@lru_cache(maxsize=1)
def page_css() -> str:
    return _static("vendor/sortable-base.min.css") + "\n" + _static("report.css")


def served_assets() -> dict[str, tuple[str, str]]:
    """name → (content, mimetype) for the browser's ``/assets/<name>`` route."""
    return {"vega.js": (vega_bundle(), "text/javascript"), "sortable.js": (sortable_js(), "text/javascript"),
            "page.css": (page_css(), "text/css")}


__all__ = ["vega_bundle", "sortable_js", "page_css", "served_assets", "require_faces", "FACES_HINT"]
