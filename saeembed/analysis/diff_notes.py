"""What a diff compared, in words: each corpus' size and length, a warning when the lengths differ,
and what the test held fixed. Every face of diff (table header, HTML report, browser page) shows
these lines, and the rows carry the same figures as columns.

Why: presence is max-pooled, so a corpus of longer documents has more of every latent; a reader
who does not see that the corpora differ in length cannot judge a frequency difference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from ..strata import corpus_lengths
from .common import corpus_info

if TYPE_CHECKING:
    from ..api import Store

LENGTH_WARN_RATIO = 1.25  # warn when the corpora's mean lengths differ by more than this factor

CONTROLLED = {
    ("length", False): "controlled for document length: per latent, logistic regression of presence on log content "
                       "tokens and the corpus (score test); adj_diff is the standardised length-adjusted difference "
                       "(--control none for plain frequencies)",
    ("length-cmh", False): "controlled for document length: Cochran–Mantel–Haenszel test over content-token length "
                           "strata (a quarter octave wide); adj_diff is the Mantel–Haenszel length-adjusted "
                           "difference (--control none for plain frequencies)",
    ("none", False): "controlled for nothing: plain frequencies and a two-proportion z-test (--control length "
                     "compares documents of equal length)",
    ("length", True): "controlled for the pairing and the pair's length ratio: conditional logistic regression of "
                      "the discordant pairs on log(tokens A / tokens B); adj_diff is the difference at equal length",
    ("none", True): "controlled for the pairing only: McNemar test on the discordant pairs (--control length also "
                    "holds the pair's length ratio fixed)",
}


def describe_corpora(store: Store, corpora: list[str]) -> pl.DataFrame:
    """corpus, documents, mean_tokens, median_tokens (content tokens per document) of each corpus."""
    rows = []
    with store.reading():
        for name in corpora:
            lengths = corpus_lengths(store, corpus_info(store, name))
            rows.append({"corpus": name, "documents": lengths.n_docs, "mean_tokens": lengths.mean_tokens,
                         "median_tokens": lengths.median_tokens})
    return pl.DataFrame(rows, schema={"corpus": pl.String, "documents": pl.Int64, "mean_tokens": pl.Float64,
                                      "median_tokens": pl.Float64})


def length_warning(corpora: pl.DataFrame) -> str | None:
    """One line when the longest corpus' mean length is more than LENGTH_WARN_RATIO times the shortest's."""
    if corpora.height < 2:
        return None
    by_mean = corpora.sort("mean_tokens")
    short, long = by_mean.row(0, named=True), by_mean.row(-1, named=True)
    ratio = long["mean_tokens"] / max(short["mean_tokens"], 1e-9)
    if ratio <= LENGTH_WARN_RATIO:
        return None
    return (f"warning: mean lengths differ {ratio:.2f}× ({long['corpus']} {long['mean_tokens']:.0f} vs "
            f"{short['corpus']} {short['mean_tokens']:.0f} content tokens); longer documents have more latents "
            "present, so plain frequencies favour the longer corpus")


def diff_notes(store: Store, corpora: list[str], control: str, pairs: int | None = None,
               pair_key: str | None = None) -> list[str]:
    """The lines every diff output states: one per corpus, the length warning, what was controlled and,
    for a paired diff (``pairs`` documents paired), how many documents had no partner."""
    desc = describe_corpora(store, corpora)
    lines = [f"{r['corpus']}: {r['documents']:,} documents, content tokens per document mean "
             f"{r['mean_tokens']:.1f}, median {r['median_tokens']:.0f}" for r in desc.iter_rows(named=True)]
    warning = length_warning(desc)
    if warning:
        lines.append(warning)
    if pairs is not None:
        unpaired = ", ".join(f"{r['corpus']} {r['documents'] - pairs}" for r in desc.iter_rows(named=True))
        how = f"meta field {pair_key!r}" if pair_key else "row position"
        lines.append(f"paired {pairs:,} documents by {how}; without a partner: {unpaired}")
    paired = pairs is not None
    lines.append(CONTROLLED[("length" if paired and control != "none" else control, paired)])
    return lines


def notes_from_rows(store: Store, df: pl.DataFrame) -> list[str]:
    """:func:`diff_notes` for a diff result (its corpora, control and pairing read from the rows)."""
    if not df.height or "control" not in df.columns:
        return []
    corpora = list(dict.fromkeys(df["target"].to_list() + df["other"].to_list()))
    paired = df["test"][0] in PAIRED_TESTS
    return diff_notes(store, corpora, df["control"][0], int(df["docs_target"][0]) if paired else None)


PAIRED_TESTS = ("mcnemar", "paired-logistic")

__all__ = ["LENGTH_WARN_RATIO", "CONTROLLED", "describe_corpora", "length_warning", "diff_notes", "notes_from_rows"]
