"""The four analyses on the command line: ``diff``, ``correlate``, ``cluster`` and ``search``.

Each is a thin shell over :mod:`saeembed.analysis`; its flags are generated from the analysis'
options dataclass, so the CLI and the Python API cannot drift apart. ``--examples N`` adds N
example documents per row with the latent's strongest token marked ``<<…>>`` from the store
(``--shade``: every token where it fires, recomputed with the reader); tables show the readable
columns, machine formats (csv/tsv/json/ndjson/parquet) keep every column.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import click
import polars as pl

from ..analysis.examples import EXAMPLE_ROWS
from ..analysis.options import ClusterOptions, CorrelateOptions, DiffOptions, SearchOptions
from ..errors import UserError
from ..llm.options import LLMOptions
from ..options import cli_options, from_cli
from .base import open_existing_store, store_option
from .output import emit, output_options


def examples_option(fn: Callable) -> Callable:
    fn = click.option("--shade", is_flag=True,
                      help="mark every token where the latent fires (re-runs the corpus' reader on the example "
                           "documents), not only its strongest token (read from the store, instant)")(fn)
    return click.option("--examples", "highlight", type=click.IntRange(min=0), default=0, show_default=True,
                        help=f"N example documents per row (first {EXAMPLE_ROWS} rows) with the activating text "
                             "marked <<…>>")(fn)


def print_examples(df: pl.DataFrame, title: Callable[[dict], str]) -> None:
    if "examples" not in df.columns:
        return
    for r in df.head(EXAMPLE_ROWS).to_dicts():
        if r["examples"]:
            click.echo("")
            click.echo(title(r))
            for ex in r["examples"]:
                click.echo(f"  [{ex['side']}] doc {ex['doc_id']}: {ex['text']}")


def emit_result(df: pl.DataFrame, fmt: str, output: str | None, table_cols: list[str] | None = None,
                caption: list[str] | None = None) -> None:
    """Tables show the readable columns; ``caption`` (what was selected and tested) goes to stderr just
    before them, as diff's and cluster's header lines do, so stdout starts with the table's header.
    Machine formats keep every column and only the rows."""
    if fmt == "table" and table_cols is not None:
        df = df.select([c for c in table_cols if c in df.columns])
    if fmt == "table":
        for line in caption or []:
            click.echo(line, err=True)
    emit(df, fmt, output)


def html_report(st: Any, df: pl.DataFrame, output: str | None, examples: int, **options: Any) -> None:
    """--format html: a self-contained report page (saeembed.report); 3 example documents by default."""
    from ..report import write_report

    path = write_report(df, st, output, examples=examples or 3, **options)
    click.echo(f"wrote {df.height} rows as an HTML report to {path}", err=True)


def present(st: Any, df: pl.DataFrame, kind: str, fmt: str, output: str | None, highlight: int,
            pairs: Callable[[int], Callable], table_cols: list[str] | None, title: Callable[[dict], str],
            shade: bool = False, caption: list[str] | None = None) -> None:
    """Show a result: the terminal table gets snippets of its example documents, ``--examples N``
    adds highlighted documents (printed under the table), machine formats keep every column."""
    from ..analysis.examples import attach_examples

    if fmt == "table":
        from ..report.terminal import table_snippets

        df = table_snippets(st, df, kind, shade=shade)
    if highlight > 0:
        df = attach_examples(st, df, pairs(highlight), shade=shade)
    emit_result(df, fmt, output, table_cols, caption)
    if fmt == "table":
        print_examples(df, title)


DIFF_TABLE = ["target", "rank", "feature_id", "label", "freq_target", "freq_other", "other", "diff", "adj_diff",
              "q_value", "example"]
PAIRED_COUNTS = ["both", "only_target", "only_other"]
HYPOTHESES_TABLE = ["target", "other", "hypothesis", "freq_target", "freq_other", "diff", "p_value", "verified",
                    "features"]


@click.command("diff", short_help="Latents more frequent in one corpus than others.")
@click.argument("corpora", nargs=-1, required=True)
@store_option()
@cli_options(DiffOptions)
@click.option("--hypotheses", is_flag=True, help="LLM: relabel the top latents contrastively, summarise them into "
                                                 "<= 10 hypotheses and verify each on held-out documents")
@click.option("--n-hypotheses", type=click.IntRange(1, 10), default=10, show_default=True,
              help="with --hypotheses: at most N hypotheses")
@cli_options(LLMOptions)
@examples_option
@output_options(html=True)
def diff_cmd(corpora: tuple[str, ...], store: str, hypotheses: bool, n_hypotheses: int, highlight: int, shade: bool,
             fmt: str, output: str | None, **kwargs: Any) -> None:
    """Latents more frequent in one corpus than in the others: saeembed diff --store S A B [C ...].

    With several corpora each target is compared with the most frequent of the others. By default
    documents are compared at equal content-token length (--control none: plain frequencies); the
    header states each corpus' documents and length and warns when the mean lengths differ by more
    than 1.25x.
    """
    from ..analysis import diff
    from ..analysis.examples import diff_example_pairs

    st = open_existing_store(store)
    opts = from_cli(DiffOptions, kwargs)
    opts.examples = max(opts.examples, highlight, 4 if hypotheses else 0)
    df = diff(st, list(corpora), opts)
    if hypotheses:
        from ..analysis.hypotheses import diff_hypotheses
        from ..llm import llm_from_options, report_usage

        llm = llm_from_options(from_cli(LLMOptions, kwargs))
        try:
            hyp = diff_hypotheses(st, df, llm, n_hypotheses=n_hypotheses)
        finally:
            report_usage(llm)
            llm.close()
        if fmt == "html":
            return html_report(st, hyp, output, 0, title="saeembed diff hypotheses")
        emit_result(hyp, fmt, output, HYPOTHESES_TABLE)
        return
    if fmt == "html":  # the report's summary states the corpora from the rows; an empty result needs them here
        return html_report(st, df, output, highlight, title=f"saeembed diff: {' vs '.join(corpora)}", shade=shade,
                           notes=[] if df.height else _diff_notes(st, list(corpora), opts))
    if fmt == "table":  # what was compared, controlled and tested: on stderr, so stdout starts with the table
        from ..report.diff_view import summary_lines

        for line in _diff_notes(st, list(corpora), opts) + summary_lines(df):
            click.echo(line, err=True)
    table = DIFF_TABLE[:-1] + (PAIRED_COUNTS if opts.paired else []) + DIFF_TABLE[-1:]  # pairs: checkable by hand
    present(st, df, "diff", fmt, output, highlight, diff_example_pairs, table,
            lambda r: f"{r['target']} #{r['rank']} latent {r['feature_id']} {r['label'] or ''} "
                      f"({r['freq_target']:.3f} vs {r['freq_other']:.3f} in {r['other']})", shade)


def _diff_notes(st: Any, corpora: list[str], opts: DiffOptions) -> list[str]:
    """The corpora's sizes and lengths, the length warning and what was controlled (table header)."""
    from ..analysis.common import paired_rows
    from ..analysis.diff_notes import diff_notes
    from ..store.corpusinfo import corpus_info

    with st.reading():
        pairs = None
        if opts.paired:
            pairs = len(paired_rows(st, corpus_info(st, corpora[0]), corpus_info(st, corpora[1]), opts.pair_key)[0])
        return diff_notes(st, corpora, opts.control, pairs, opts.pair_key)


@click.command("correlate", short_help="Pairs of latents that co-occur (NPMI).")
@click.argument("corpus")
@store_option()
@cli_options(CorrelateOptions)
@examples_option
@output_options(html=True)
def correlate_cmd(corpus: str, store: str, highlight: int, shade: bool, fmt: str, output: str | None,
                  **kwargs: Any) -> None:
    """Pairs of latents that occur in the same documents (NPMI): saeembed correlate --store S CORPUS."""
    from ..analysis import correlate
    from ..analysis.correlate import CONTROLLED, coactive_documents, near_ubiquitous
    from ..analysis.examples import attach_examples
    from ..store.corpusinfo import corpus_info

    st = open_existing_store(store)
    opts = from_cli(CorrelateOptions, kwargs)
    df = correlate(st, corpus, opts)
    if fmt == "html":
        w = opts.with_corpus
        return html_report(st, df, output, highlight, corpus=None if w else corpus,
                           title=f"saeembed correlate: {corpus}" + (f" with {w}" if w else ""), shade=shade)
    if highlight > 0 and df.height:
        if opts.with_corpus is not None:
            raise UserError("--examples shows documents where both latents fire; with --with they are in two "
                            "corpora, so leave --examples out")
        with st.reading():
            co = coactive_documents(st, corpus_info(st, corpus), df.head(EXAMPLE_ROWS), opts.threshold, highlight)
        df = attach_examples(st, df, lambda r: [(s, d, f) for d in co.get((r["feature_a"], r["feature_b"]), [])
                                                for s, f in (("a", r["feature_a"]), ("b", r["feature_b"]))],
                             shade=shade)
    caption = [f"{df.height} pairs of latents of {corpus} that fire in the same documents more than chance (NPMI)"
               + (f", over {df['n_docs'][0]} documents" if df.height and "n_docs" in df.columns else ""),
               CONTROLLED[opts.control]]
    with st.reading():
        dense = near_ubiquitous(st, corpus, opts.threshold, opts.max_density)
    if dense:
        caption.append(f"left out {dense} latent{'s' if dense != 1 else ''} present in more than "
                       f"{opts.max_density:.0%} of the documents: they co-occur with nearly everything "
                       "(--max-density 1 keeps them)")
    if df.height == 0:
        caption.append(f"no pair reaches NPMI {opts.min_npmi:g} once pairs with similar labels or a shared peak token "
                       "are dropped: lower --min-npmi (e.g. 0.3), or see them with --keep-similar-labels / "
                       "--no-peak-check")
    emit_result(df, fmt, output, [c for c in df.columns if c != "examples"], caption)
    if fmt == "table":
        print_examples(df, lambda r: f"{r['feature_a']} {r['label_a'] or ''} ~ {r['feature_b']} {r['label_b'] or ''} "
                                     f"(NPMI {r['npmi']:.3f})")


CLUSTER_TABLE = ["cluster", "size", "share", "top_features", "top_labels", "top_diffs", "central"]


@click.command("cluster", short_help="Cluster documents on the latents a query selects.")
@click.argument("corpus")
@store_option()
@cli_options(ClusterOptions)
@click.option("--per-document", is_flag=True, help="one row per document (doc_id, cluster, centrality) instead of "
                                                   "one per cluster")
@click.option("--expand", is_flag=True, help="LLM: add keyphrases for --query before selecting latents")
@cli_options(LLMOptions)
@examples_option
@output_options(html=True)
def cluster_cmd(corpus: str, store: str, per_document: bool, expand: bool, highlight: int, shade: bool, fmt: str,
                output: str | None, **kwargs: Any) -> None:
    """Cluster documents on the latents a query selects: saeembed cluster --store S CORPUS --query Q.

    One row per cluster (cluster -1: documents without any selected latent, or HDBSCAN noise)
    with its distinctive latents and most central documents.
    """
    from ..analysis import cluster
    from ..analysis.cluster import cluster_assignments
    from ..analysis.examples import cluster_example_pairs
    from ..analysis.proposals import cluster_header, cluster_medians

    st = open_existing_store(store)
    opts = from_cli(ClusterOptions, kwargs)
    if expand:
        if not opts.query:
            raise UserError("--expand expands --query; pass --query")
        opts.query = _expanded(opts.query, kwargs)
    res = cluster(st, corpus, opts)
    header = cluster_header(res.row(0, named=True), medians=cluster_medians(res)) if res.height else []
    if fmt == "table":
        for line in header:
            click.echo(line, err=True)
    if per_document:
        if fmt == "html":
            return html_report(st, cluster_assignments(res), output, 0, title=f"saeembed cluster: {corpus}",
                               notes=header)
        emit_result(cluster_assignments(res), fmt, output)
        return
    if fmt == "html":
        how = (f"query {opts.query!r}" if opts.query else
               f"latents {opts.features}" if opts.features else "all latents")
        return html_report(st, res, output, highlight, title=f"saeembed cluster: {corpus}",
                           notes=[f"clustered on {how}"], shade=shade)
    present(st, res, "cluster", fmt, output, highlight, cluster_example_pairs, CLUSTER_TABLE,
            lambda r: f"cluster {r['cluster']} ({r['size']} docs), central documents marked for "
                      f"latent {r['top_features'][0]} {r['top_labels'][0]}", shade)


@click.command("search", short_help="Documents that have a property.")
@click.argument("corpus")
@click.argument("query")
@store_option()
@cli_options(SearchOptions)
@click.option("--expand", is_flag=True, help="LLM: add keyphrases for QUERY before selecting latents (sae/hybrid); "
                                             "the endpoint comes from SAEEMBED_LLM_BASE_URL / SAEEMBED_LLM_MODEL")
@examples_option
@output_options(html=True)
def search_cmd(corpus: str, query: str, store: str, expand: bool, highlight: int, shade: bool, fmt: str,
               output: str | None, **kwargs: Any) -> None:
    """Documents of CORPUS that match QUERY: saeembed search --store S CORPUS "QUERY" [--mode ...]."""
    from ..analysis import search
    from ..analysis.examples import search_example_pairs

    st = open_existing_store(store)
    opts = from_cli(SearchOptions, kwargs)
    if expand:
        if opts.mode not in ("sae", "hybrid"):
            raise UserError("--expand applies to --mode sae and hybrid")
        query = _expanded(query, kwargs)
    df = search(st, corpus, query, opts)
    if fmt == "html":
        return html_report(st, df, output, highlight, title=f"saeembed search: {corpus}",
                           notes=[f"query {query!r}, mode {opts.mode}"
                                  + (f", fused with {', '.join(opts.fuse)}" if opts.fuse else "")], shade=shade)
    pairs = search_example_pairs if "top_feature" in df.columns else (lambda n: lambda r: [])
    caption = [f"{df.height} documents of {corpus} for {query!r}, best first (mode {opts.mode}"
               + (f", fused with {', '.join(opts.fuse)}" if opts.fuse else "") + ")"]
    shown = [c for c in df.columns if c not in ("examples", "contributions", "top_label")]  # explanation says it
    present(st, df, "search", fmt, output, highlight, pairs, shown,
            lambda r: f"#{r['rank']} doc {r['doc_id']} (latent {r.get('top_feature')} {r.get('top_label') or ''})",
            shade, caption)


def _expanded(query: str, kwargs: dict[str, Any]) -> str:
    """QUERY plus the LLM's keyphrases (printed to stderr, so the selection can be reproduced)."""
    from ..analysis.select import expand_query
    from ..llm import llm_from_options, report_usage

    if "base_url" in kwargs:
        opts = from_cli(LLMOptions, kwargs)
    else:  # search: its --cache flag is the dense sidecar's, so the endpoint comes from the environment
        opts = LLMOptions(base_url=os.environ.get("SAEEMBED_LLM_BASE_URL"),
                          llm_model=os.environ.get("SAEEMBED_LLM_MODEL"))
    llm = llm_from_options(opts)
    try:
        out = expand_query(query, llm)
    finally:
        report_usage(llm)
        llm.close()
    click.echo(f"expanded query: {out}", err=True)
    return out


COMMANDS = [diff_cmd, correlate_cmd, cluster_cmd, search_cmd]
