"""The diff result as a report section: per-latent frequencies with intervals, table, examples."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from ..analysis.diff_notes import PAIRED_TESTS, notes_from_rows
from ..highlight.views import Highlighter, shade_legend
from .charts import diff_chart
from .page import NO_LINKS, ChartView, Example, ExampleGroup, Links, Section
from .tables import frame_table

if TYPE_CHECKING:
    from ..store.handle import Store

TABLE_COLUMNS = ["target", "rank", "feature_id", "label", "freq_target", "freq_other", "other", "diff", "adj_diff",
                 "q_value", "example"]
TESTS = {"mcnemar": "McNemar test on matched pairs", "z": "two-proportion z-test",
         "cmh": "Cochran–Mantel–Haenszel test over length strata",
         "logistic": "logistic regression on log length (score test)",
         "paired-logistic": "conditional logistic regression on matched pairs and their length ratio"}
SNIPPET_TOKENS = 10


def _summary(store: Store, df: pl.DataFrame) -> list[str]:
    """The corpora (documents, content tokens), the length warning, what was controlled, and one line
    per target."""
    return notes_from_rows(store, df) + summary_lines(df)


def summary_lines(df: pl.DataFrame) -> list[str]:
    """One line per target: the corpora compared, how many latents passed, the test (table caption, report)."""
    lines = []
    for target in dict.fromkeys(df["target"].to_list()):
        grp = df.filter(pl.col("target") == target)
        r = grp.row(0, named=True)
        lines.append(f"{target} ({r['docs_target']} documents) vs {r['other']} ({r['docs_other']}): {grp.height} "
                     f"latents more frequent in {target}; {TESTS.get(r['test'], r['test'])}, Benjamini–Hochberg "
                     "q-values.")
    return lines or ["No latent passed the filters (min_diff, fdr); loosen them to see more."]


def diff_section(store: Store, df: pl.DataFrame, examples: int = 3, example_rows: int = 10,
                 links: Links = NO_LINKS, shade: bool = False) -> Section:
    """Chart of the top latents per target, the full table, and the top rows' example documents
    (both sides) with the latent's tokens shaded."""
    head = df.filter(pl.col("rank") <= example_rows) if df.height else df
    pairs = [(d, r["feature_id"]) for r in head.iter_rows(named=True)
             for d in r["examples_target"][:examples] + r["examples_other"][:examples]]
    first = [r["examples_target"][0] for r in df.iter_rows(named=True) if r["examples_target"]]
    hl = Highlighter(store, [d for d, _ in pairs], [f for _, f in pairs], plain_ids=first, shade=shade)
    highlighted = {(r["target"], r["feature_id"]) for r in head.iter_rows(named=True)}

    def snippet(r: dict):
        if not r["examples_target"]:
            return None
        d = r["examples_target"][0]
        if (r["target"], r["feature_id"]) in highlighted:
            return hl.view(d, [r["feature_id"]], SNIPPET_TOKENS)
        return hl.plain(d, [r["feature_id"]], 120)

    paired = df.height > 0 and df["test"][0] in PAIRED_TESTS  # the pair counts let a reader check the test
    columns = TABLE_COLUMNS[:-1] + (["both", "only_target", "only_other"] if paired else []) + TABLE_COLUMNS[-1:]
    table = frame_table(df, columns, docs={"example": snippet},
                        links={"feature_id": lambda r: links.latent(r["feature_id"]),
                               "label": lambda r: links.latent(r["feature_id"])})
    groups = []
    for r in head.iter_rows(named=True):
        exs = [Example(f"+{r['target']} · doc {d}", hl.view(d, [r["feature_id"]]), links.doc(d, r["feature_id"]))
               for d in r["examples_target"][:examples]]
        exs += [Example(f"−{r['other']} · doc {d}", hl.view(d, [r["feature_id"]]), links.doc(d, r["feature_id"]))
                for d in r["examples_other"][:examples]]
        title = (f"{r['target']} #{r['rank']} · latent {r['feature_id']} {r['label'] or ''} · "
                 f"{r['freq_target']:.3f} vs {r['freq_other']:.3f} in {r['other']}")
        groups.append(ExampleGroup(title, exs, links.latent(r["feature_id"])))
    charts = [ChartView("Frequency per corpus", "share of documents where each latent fires, with 95% Wilson "
                        "intervals (top 25 per target)", diff_chart(df))] if df.height else []
    return Section("Dataset diff", _summary(store, df), charts, [("Latents", table)], groups,
                   [shade_legend(shade, "the latent")])


__all__ = ["diff_section", "summary_lines"]
