"""The search result as a report section: scores by rank and the ranked documents, shaded."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from ..highlight.views import Highlighter, shade_legend
from .charts import search_chart
from .page import NO_LINKS, ChartView, Example, ExampleGroup, Links, Section
from .tables import frame_table

if TYPE_CHECKING:
    from ..store.handle import Store

TABLE_COLUMNS = ["rank", "doc_id", "score", "sae_rank", "dense_rank", "top_feature", "explanation", "document"]
SNIPPET_TOKENS = 14


def table_columns(df: pl.DataFrame) -> list[str]:
    """The fixed columns plus one input rank per fused corpus (``--fuse``), after the fixed ranks."""
    fused = [c for c in df.columns if c.endswith("_rank") and c not in TABLE_COLUMNS]
    return TABLE_COLUMNS[:5] + fused + TABLE_COLUMNS[5:]


def search_section(store: Store, df: pl.DataFrame, links: Links = NO_LINKS, shade: bool = False) -> Section:
    """Every ranked document is shown; in sae/example/hybrid modes its explanation names the latents
    that make up most of its score, with their shares, and the one that contributed most is shaded
    (dense mode has no latent, so its documents are plain)."""
    has_latent = "top_feature" in df.columns
    rows = list(df.iter_rows(named=True))
    feats = {r["doc_id"]: [r["top_feature"]] if has_latent and r["top_feature"] is not None else [] for r in rows}
    hl = Highlighter(store, [d for d, fs in feats.items() if fs], [f for fs in feats.values() for f in fs],
                     plain_ids=list(feats), shade=shade)

    def view(doc_id: int, window: int):
        return hl.view(doc_id, feats[doc_id], window) if feats[doc_id] else hl.plain(doc_id, chars=window * 12)

    table = frame_table(df, table_columns(df), docs={"document": lambda r: view(r["doc_id"], SNIPPET_TOKENS)},
                        links={"doc_id": lambda r: links.doc(r["doc_id"], (feats[r["doc_id"]] or [None])[0]),
                               "top_feature": lambda r: links.latent(r["top_feature"]) if has_latent else None,
                               "explanation": lambda r: links.latent(r["top_feature"]) if has_latent else None})
    exs = [Example(f"#{r['rank']} · doc {r['doc_id']} · score {r['score']:.4f}"
                   + (f" · {r['explanation']}" if feats[r["doc_id"]] and r.get("explanation") else ""),
                   view(r["doc_id"], 60), links.doc(r["doc_id"], (feats[r["doc_id"]] or [None])[0])) for r in rows]
    charts = [ChartView("Scores", "score of each ranked document (hover for the text)", search_chart(df))] \
        if df.height else []
    lines = [f"{df.height} documents, best first."]
    return Section("Search", lines, charts, [("Ranked documents", table)],
                   [ExampleGroup("Ranked documents", exs)] if exs else [],
                   [shade_legend(shade, "the document's top-contributing latent")] if has_latent else [])


__all__ = ["search_section"]
