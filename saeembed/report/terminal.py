"""Snippets for the terminal table: example documents as text with the activating span marked.

Machine formats keep the doc ids; the table view of diff, cluster and search shows, for the rows
it prints, a short snippet of the example document with the row's latent's strongest token marked
``<<…>>``, read from the store (``shade``: every run of tokens where it fires, recomputed by the
reader; plain text when that is impossible).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from ..highlight.snippets import highlighted_examples

if TYPE_CHECKING:
    from ..store.handle import Store

TABLE_ROWS = 50  # rows the table view prints (saeembed.output.table's max_rows)
SNIPPET_CHARS = 58  # fits the table's 60-character cells with the marks in view


def _marked(store: Store, pairs: list[tuple[int, int] | None], chars: int, shade: bool) -> list[str | None]:
    texts = highlighted_examples(store, sorted({p for p in pairs if p is not None}), max_chars=chars, shade=shade)
    return [texts.get(p) if p is not None else None for p in pairs]


def table_snippets(store: Store, df: pl.DataFrame, kind: str, rows: int = TABLE_ROWS,
                   chars: int = SNIPPET_CHARS, shade: bool = False) -> pl.DataFrame:
    """``df`` with a snippet column for the first ``rows`` rows: ``example`` (diff: the target's top
    document), ``central`` (cluster: the most central document) or ``text`` marked (search)."""
    head = df.head(rows).to_dicts()
    if kind == "diff":
        pairs = [(r["examples_target"][0], r["feature_id"]) if r["examples_target"] else None for r in head]
        name = "example"
    elif kind == "cluster":
        pairs = [(r["central_docs"][0], r["top_features"][0]) if r["central_docs"] and r["top_features"] else None
                 for r in head]
        name = "central"
    elif kind == "search" and "top_feature" in df.columns:
        pairs = [(r["doc_id"], r["top_feature"]) if r["top_feature"] is not None else None for r in head]
        name = "text"
    else:
        return df
    snippets = _marked(store, pairs, chars, shade)
    if name == "text":
        snippets = [s if s is not None else r["text"] for s, r in zip(snippets, head)]
    col = pl.Series(name, snippets + [None] * (df.height - len(head)), pl.String)
    return df.with_columns(col)


__all__ = ["table_snippets", "TABLE_ROWS"]
