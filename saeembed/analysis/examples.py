"""Example documents beside result rows, with the token where a latent fires most marked ``<<…>>``.

The marks come from the store's token positions (``shade``: every firing run, recomputed with the
corpus' reader, one forward per document); only the first :data:`EXAMPLE_ROWS` rows get examples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import polars as pl

from ..highlight.snippets import highlighted_examples

if TYPE_CHECKING:
    from ..store.handle import Store

EXAMPLE_ROWS = 20  # rows that get highlighted examples: each costs forwards of the reader
EXAMPLE_SCHEMA = pl.List(pl.Struct({"doc_id": pl.Int64, "side": pl.String, "feature_id": pl.Int32,
                                    "text": pl.String}))

Pairs = Callable[[dict[str, Any]], list[tuple[str, int, int]]]


def attach_examples(st: Store, df: pl.DataFrame, pairs_of: Pairs, shade: bool = False) -> pl.DataFrame:
    """Add ``examples`` [{doc_id, side, feature_id, text}] to the first EXAMPLE_ROWS rows.

    ``pairs_of(row)`` names (side, doc_id, feature_id) triples; the text is the document with the
    token where that latent fires most marked (``shade``: every token where it fires).
    """
    rows = df.head(EXAMPLE_ROWS).to_dicts()
    wanted = [pairs_of(r) for r in rows]
    texts = highlighted_examples(st, sorted({(d, f) for w in wanted for (_, d, f) in w}), shade=shade)
    col = [[{"doc_id": d, "side": side, "feature_id": f, "text": texts.get((d, f), "")} for side, d, f in w]
           for w in wanted] + [[] for _ in range(df.height - len(rows))]
    return df.with_columns(pl.Series("examples", col, EXAMPLE_SCHEMA))


def diff_example_pairs(n: int) -> Pairs:
    """Each diff row's strongest ``n`` documents on both sides."""
    return lambda r: ([("+" + r["target"], d, r["feature_id"]) for d in r["examples_target"][:n]]
                      + [("-" + r["other"], d, r["feature_id"]) for d in r["examples_other"][:n]])


def cluster_example_pairs(n: int) -> Pairs:
    """Each cluster's ``n`` most central documents, marked for its most distinctive latent."""
    return lambda r: ([("central", d, r["top_features"][0]) for d in r["central_docs"][:n]]
                      if r["top_features"] else [])


def search_example_pairs(n: int) -> Pairs:
    """The first ``n`` hits, marked for the latent that contributes most to their score."""
    return lambda r: ([("match", r["doc_id"], r["top_feature"])]
                      if r["rank"] <= n and r.get("top_feature") is not None else [])


__all__ = ["attach_examples", "EXAMPLE_ROWS", "EXAMPLE_SCHEMA", "diff_example_pairs", "cluster_example_pairs",
           "search_example_pairs"]
