"""The browser's pages (GET only): corpora, feature search, latent, document, diff, search, cluster, assets."""

from __future__ import annotations

from typing import Any

from ..analysis import cluster, diff, search
from ..analysis.diff_notes import diff_notes
from ..analysis.options import CONTROLS
from ..analysis.select import split_phrases
from ..errors import UserError
from ..highlight.views import Highlighter, shade_legend
from ..labels import search_features
from ..report import build_section
from ..report.assets import served_assets
from ..report.tables import frame_table
from .data import check_latent, document, document_latents, latent_sections, sae_info
from .request import BrowserLinks, choice_arg, float_arg, int_arg, text_arg

SEARCH_MODES = ("sae", "hybrid", "dense", "example")
CLUSTER_SELECT = ("auto", "labels", "descriptors", "axis", "facets", "topics")
FEATURES_PAGE = 200
# Per-request bounds (benchmarks/browser_request_cost.py, shipped reader, loaded 2-core machine): the
# reader reads an example text per request, and a 3,000-word example cost 20-24 s of CPU while the
# single-threaded server answered nobody else; the longest example the bounds admit cost 0.8-5 s.
EXAMPLE_TOKENS = 512
# every phrase of an sae/hybrid query selects its own latents: 100 phrases cost 7.5 s of CPU, 20 cost
# 2.0-2.4 s (the paper expands a query into 18 phrases)
MAX_PHRASES = 20


def _links(store: Any, info: dict[str, Any]) -> BrowserLinks:
    n_saes = store.con.execute("SELECT count(*) FROM saes").fetchall()[0][0]
    return BrowserLinks(info["sae"] if n_saes > 1 else None)


def _corpora(store: Any) -> list[dict[str, Any]]:
    return store.corpora().to_dicts()


def render(template: str, **ctx: Any) -> str:
    from flask import g, render_template


    return render_template(template, corpora=_corpora(g.store), modes=SEARCH_MODES, selects=CLUSTER_SELECT,
                           controls=CONTROLS, **ctx)


def register(app: Any) -> None:
    _register_pages(app)
    _register_analyses(app)


def _register_pages(app: Any) -> None:
    """Corpora, assets, latent search, latent and document pages."""
    from flask import Response, abort, g, redirect, request, url_for


    @app.get("/")
    def index() -> str:
        df = g.store.corpora()
        cols = ["name", "n_docs", "n_tokens", "reader", "layer", "sae", "created_at"]
        table = frame_table(df, cols, links={"name": lambda r: url_for("search_page", corpus=r["name"])})
        saes = g.store.sql("SELECT sae, d_sae, activation, k, reader, layer FROM saes ORDER BY sae")
        return render("index.html", table=table, saes=frame_table(saes))

    @app.get("/assets/<name>")
    def asset(name: str) -> Response:
        assets = served_assets()
        if name not in assets:
            abort(404)
        body, mime = assets[name]
        resp = Response(body, mimetype=mime)
        resp.headers["Cache-Control"] = "public, max-age=3600"
        return resp

    @app.get("/features")
    def features() -> str:
        info = sae_info(g.store, request.args.get("sae") or None)
        links = _links(g.store, info)
        q = text_arg("q")
        if q:
            df = search_features(g.store, q, k=50, sae=info["sae"]).select("feature_id", "label", "label_source",
                                                                           "label_score", "similarity", "score")
            note = f"the 50 latents whose labels best match {q!r}"
        else:
            page = int_arg("page", 1, 1, 10**9)
            df = (g.store.features(info["sae"]).select("feature_id", "label", "label_source", "score", "density")
                  .sort(["score", "feature_id"], descending=[True, False], nulls_last=True))
            df = df.slice((page - 1) * FEATURES_PAGE, FEATURES_PAGE)
            note = (f"labelled latents, best label score first, page {page} ({FEATURES_PAGE} a page); a latent "
                    "whose labels all score below the floor shows its strongest context")
        table = frame_table(df, links={"feature_id": lambda r: links.latent(r["feature_id"]),
                                       "label": lambda r: links.latent(r["feature_id"])})
        return render("features.html", table=table, q=q, note=note, sae=info["sae"])

    @app.get("/latent")
    def latent_jump():
        fid = int_arg("id", -1, 0, 2**31 - 1)
        if fid < 0:
            raise UserError("give a latent id, e.g. /latent?id=123")
        return redirect(url_for("latent", feature_id=fid, sae=request.args.get("sae") or None))

    @app.get("/latent/<int:feature_id>")
    def latent(feature_id: int) -> str:
        info = sae_info(g.store, request.args.get("sae") or None)
        sections, labels, corpus = latent_sections(g.store, info, feature_id, request.args.get("corpus") or None,
                                                   _links(g.store, info))
        return render("latent.html", sections=sections, labels=frame_table(labels), feature_id=feature_id,
                      sae=info["sae"], corpus=corpus)

    @app.get("/doc/<int:doc_id>")
    def doc(doc_id: int) -> str:
        row = document(g.store, doc_id)
        info = sae_info(g.store, row["sae"])
        feature = int_arg("feature", -1, 0, 2**31 - 1)
        shade = request.args.get("shade") == "1"
        view = None
        if feature >= 0:
            check_latent(info, feature)
            view = Highlighter(g.store, [doc_id], [feature], shade=shade).view(doc_id, [feature], window=10**7)
        links = _links(g.store, info)
        top = frame_table(document_latents(g.store, row),
                          links={"feature_id": lambda r: url_for("doc", doc_id=doc_id, feature=r["feature_id"]),
                                 "label": lambda r: links.latent(r["feature_id"])})
        return render("doc.html", doc=row, view=view, feature=feature if feature >= 0 else None, top=top,
                      latent_href=links.latent(feature) if feature >= 0 else None, shade=shade,
                      legend=shade_legend(shade, "this latent"),
                      shade_href=url_for("doc", doc_id=doc_id, feature=feature, shade=1) if feature >= 0 else None)



def _register_analyses(app: Any) -> None:
    """The diff and search pages: the analyses' own functions, rendered as report sections."""
    from flask import g, request

    @app.get("/diff")
    def diff_page() -> str:
        a, b = request.args.get("a", ""), request.args.get("b", "")
        section = None
        if a or b:
            if not (a and b):
                raise UserError("pick two corpora to compare (a and b)")
            control = choice_arg("control", "length", CONTROLS, "control")
            df = diff(g.store, [a, b], fdr=float_arg("fdr", 0.05, 1e-12, 1.0), control=control,
                      min_diff=float_arg("min_diff", 0.03, 0.0, 1.0), top=int_arg("top", 100, 1, 2000), examples=3)
            info = sae_info(g.store, g.store.corpus(a)["sae"])
            section = build_section(g.store, df, "diff", examples=2, example_rows=3, links=_links(g.store, info))
            if not df.height:  # the section states the corpora from its rows; without rows, state them here
                section.lines = diff_notes(g.store, [a, b], control) + section.lines
        return render("analysis.html", title="Diff two corpora", form="diff", section=section, args=request.args)

    @app.get("/search")
    def search_page() -> str:
        mode = choice_arg("mode", "sae", SEARCH_MODES, "mode")

        def run(corpus: str, q: str) -> Any:
            if mode in ("sae", "hybrid"):
                _bounded_phrases(q)
            fuse = request.args.get("fuse", "").strip()
            return search(g.store, corpus, q, k=int_arg("k", 20, 1, 200), mode=mode, cache=False,
                          fuse=[fuse] if fuse else [], max_example_tokens=EXAMPLE_TOKENS), {}

        return _query_page("search", "Search a corpus", run)

    @app.get("/cluster")
    def cluster_page() -> str:
        """A query's clustering, headed by how its latents were chosen and why (the CLI's header lines)."""
        select = choice_arg("select", "auto", CLUSTER_SELECT, "selection")

        def run(corpus: str, q: str) -> Any:
            _bounded_phrases(q)
            k = int_arg("k", 0, 0, 50)
            return cluster(g.store, corpus, query=q, k=k or None, select=select), {"examples": 2}

        return _query_page("cluster", "Cluster a corpus", run)


def _query_page(form: str, title: str, run: Any) -> str:
    """A page that runs one analysis of a corpus for the query ``q``: ``run(corpus, q)`` returns the result
    and the view's options; without a query the page shows only its form."""
    from flask import g, request


    corpus, q = request.args.get("corpus", ""), text_arg("q")
    section = None
    if q:
        if not corpus:
            raise UserError(f"pick a corpus to {form}")
        df, view = run(corpus, q)
        info = sae_info(g.store, g.store.corpus(corpus)["sae"])
        section = build_section(g.store, df, form, links=_links(g.store, info), **view)
    return render("analysis.html", title=title, form=form, section=section, args=request.args)


def _bounded_phrases(query: str) -> None:
    """Refuse a query of more than :data:`MAX_PHRASES` comma-separated phrases: each selects its own latents
    (label and descriptor scores over every latent), so the phrases bound a request's cost."""
    n = len(split_phrases(query))
    if n > MAX_PHRASES:
        raise UserError(f"the query holds {n} comma-separated phrases; the browser takes at most {MAX_PHRASES} "
                        "per request")


__all__ = ["register", "SEARCH_MODES", "EXAMPLE_TOKENS", "MAX_PHRASES"]
