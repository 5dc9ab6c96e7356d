"""The correlate result as a report section: NPMI heatmap, pair table, co-active documents."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from ..analysis.correlate import CONTROLLED, coactive_documents
from ..highlight.views import Highlighter
from ..store.corpusinfo import corpus_info
from .charts import correlate_chart
from .page import NO_LINKS, ChartView, Example, ExampleGroup, Links, Section
from .tables import frame_table

if TYPE_CHECKING:
    from ..store.handle import Store

TABLE_COLUMNS = ["feature_a", "label_a", "feature_b", "label_b", "npmi", "n_a", "n_b", "n_ab", "expected_ab",
                 "q_value", "label_similarity", "same_peak_share", "same_token_share", "example"]
SNIPPET_TOKENS = 10


def coactive(store: Store, corpus: str | None, df: pl.DataFrame, n: int, threshold: float = 0.0
             ) -> dict[tuple[int, int], list[int]]:
    """(feature_a, feature_b) → documents of ``corpus`` where both fire; {} without a corpus."""
    if corpus is None or n <= 0 or df.height == 0:
        return {}

    return coactive_documents(store, corpus_info(store, corpus), df, threshold, n)


def correlate_section(store: Store, df: pl.DataFrame, corpus: str | None, examples: int = 3,
                      example_rows: int = 10, links: Links = NO_LINKS, shade: bool = False) -> Section:
    """``corpus`` is the correlated corpus (the frame does not name it); without it, or in cross
    mode, the section has no example documents."""
    head = df.head(example_rows)
    docs = coactive(store, corpus, head, examples)
    hl = Highlighter(store, [d for ds in docs.values() for d in ds],
                     head["feature_a"].to_list() + head["feature_b"].to_list(), shade=shade)

    def snippet(r: dict):
        ds = docs.get((r["feature_a"], r["feature_b"]))
        return hl.view(ds[0], [r["feature_a"], r["feature_b"]], SNIPPET_TOKENS) if ds else None

    table = frame_table(df, TABLE_COLUMNS, docs={"example": snippet},
                        links={c: (lambda r, c=c: links.latent(r[c.replace("label", "feature")]))
                               for c in ("feature_a", "label_a", "feature_b", "label_b")})
    groups = []
    for r in head.iter_rows(named=True):
        pair = (r["feature_a"], r["feature_b"])
        exs = [Example(f"doc {d}", hl.view(d, list(pair)), links.doc(d, pair[0])) for d in docs.get(pair, [])]
        if exs:
            groups.append(ExampleGroup(f"{r['feature_a']} {r['label_a'] or ''} ~ {r['feature_b']} "
                                       f"{r['label_b'] or ''} · NPMI {r['npmi']:.3f} · together in {r['n_ab']} "
                                       "documents", exs))
    lines = [f"{df.height} pairs of latents that fire in the same documents more than chance (NPMI), over "
             f"{df['n_docs'][0] if df.height else 0} documents."]
    controls = df["control"].unique().to_list() if "control" in df.columns else []
    lines += [CONTROLLED[c] + "." for c in controls if c in CONTROLLED]
    if corpus is None:
        lines.append("No example documents: pass the correlated corpus (corpus=...) to see where both fire.")
    charts = [ChartView("NPMI of the top pairs", "rows: latent a, columns: latent b (top 30 pairs)",
                        correlate_chart(df))] if df.height else []
    return Section("Latent correlations", lines, charts, [("Pairs", table)], groups,
                   ["latent a", "latent b"])


__all__ = ["correlate_section"]
