"""CLI commands of the four analyses: ``diff``, ``correlate``, ``cluster`` and ``search``.

Each is a thin shell over :mod:`saeembed.analysis`; ``--format`` picks table/csv/json/parquet
(``--output FILE`` writes it to a file; parquet needs it). ``--examples N`` adds N example
documents per row with the activating text marked ``<<…>>``: token activations are recomputed with
the corpus' reader and SAE (one forward per document), so only the first rows get them.
"""

from __future__ import annotations

from typing import Any, Callable

import click
import polars as pl

from .cli import main, open_existing_store, store_option
from .errors import UserError
from .output import emit, format_option

EXAMPLE_ROWS = 20  # rows that get highlighted examples: each costs forwards of the reader
EXAMPLE_SCHEMA = pl.List(pl.Struct({"doc_id": pl.Int64, "side": pl.String, "feature_id": pl.Int32,
                                    "text": pl.String}))


def _output_option():  # noqa: ANN202 - click decorator
    return click.option("--output", "output", type=click.Path(dir_okay=False),
                        help="write the result to FILE (needed for --format parquet)")


def _examples_option():  # noqa: ANN202
    return click.option("--examples", type=click.IntRange(min=0), default=0, show_default=True,
                        help=f"N example documents per row (first {EXAMPLE_ROWS} rows) with the activating text "
                             "marked <<…>>")


def attach_examples(st: Any, df: pl.DataFrame, pairs_of: Callable[[dict], list[tuple[str, int, int]]]
                    ) -> pl.DataFrame:
    """Add ``examples`` [{doc_id, side, feature_id, text}] to the first EXAMPLE_ROWS rows.

    ``pairs_of(row)`` names (side, doc_id, feature_id) triples; the text is the document with the
    tokens where that latent fires marked.
    """
    from .analysis.common import highlighted_examples

    rows = df.head(EXAMPLE_ROWS).to_dicts()
    wanted = [pairs_of(r) for r in rows]
    texts = highlighted_examples(st, sorted({(d, f) for w in wanted for (_, d, f) in w}))
    col = [[{"doc_id": d, "side": side, "feature_id": f, "text": texts.get((d, f), "")} for side, d, f in w]
           for w in wanted] + [[] for _ in range(df.height - len(rows))]
    return df.with_columns(pl.Series("examples", col, EXAMPLE_SCHEMA))


def _print_examples(df: pl.DataFrame, title: Callable[[dict], str]) -> None:
    if "examples" not in df.columns:
        return
    for r in df.head(EXAMPLE_ROWS).to_dicts():
        if r["examples"]:
            click.echo("")
            click.echo(title(r))
            for ex in r["examples"]:
                click.echo(f"  [{ex['side']}] doc {ex['doc_id']}: {ex['text']}")


def _html_report(st: Any, df: pl.DataFrame, output: str | None, examples: int, **options: Any) -> None:
    """--format html: a self-contained report page (saeembed.report); 3 example documents by default."""
    from .report import write_report

    path = write_report(df, st, output, examples=examples or 3, **options)
    click.echo(f"wrote {df.height} rows as an HTML report to {path}", err=True)


def _emit(df: pl.DataFrame, fmt: str, output: str | None, table_cols: list[str] | None = None) -> None:
    """Tables show the readable columns; machine formats keep every column."""
    if fmt == "table" and table_cols is not None:
        df = df.select([c for c in table_cols if c in df.columns])
    emit(df, fmt, output)


@main.command("diff")
@click.argument("corpora", nargs=-1, required=True)
@store_option()
@click.option("--target", help="only this corpus as the target (default: each corpus in turn)")
@click.option("--paired", is_flag=True, help="matched documents (same prompt, two models): McNemar test on pairs")
@click.option("--pair-key", help="with --paired: pair documents by this meta field instead of by row")
@click.option("--threshold", type=float, default=0.0, show_default=True, help="present when max activation > this")
@click.option("--min-diff", type=float, default=0.03, show_default=True, help="keep latents with freq diff >= this")
@click.option("--min-support", type=click.IntRange(min=0), default=1, show_default=True,
              help="test only latents present in >= N documents (both sides together)")
@click.option("--top", type=click.IntRange(min=1), default=200, show_default=True, help="at most N latents per target")
@click.option("--fdr", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True,
              help="keep BH q-value <= this; 1 keeps every latent (the paper's setting)")
@click.option("--n-docs", "n_docs", type=click.IntRange(min=0), default=3, show_default=True,
              help="example doc ids per side")
@click.option("--hypotheses", is_flag=True, help="LLM: relabel the top latents contrastively, summarise them into "
                                                 "<= 10 hypotheses and verify each on held-out documents")
@click.option("--n-hypotheses", type=click.IntRange(1, 10), default=10, show_default=True)
@click.option("--llm-backend", type=click.Choice(["openai", "local"]), default="openai", show_default=True)
@click.option("--llm-model", envvar="SAEEMBED_LLM_MODEL", help="model at the endpoint (or local path / hub id)")
@click.option("--base-url", envvar="SAEEMBED_LLM_BASE_URL", help="OpenAI-compatible endpoint base URL")
@click.option("--api-key", help="API key (default: SAEEMBED_LLM_API_KEY or OPENAI_API_KEY)")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False),
              help="LLM response cache file (default ~/.cache/saeembed/llm/completions.sqlite)")
@click.option("--no-cache", is_flag=True, help="always call the LLM")
@_examples_option()
@format_option(with_parquet=True, with_html=True)
@_output_option()
def diff_cmd(corpora: tuple[str, ...], store: str, target: str | None, paired: bool, pair_key: str | None,
             threshold: float, min_diff: float, min_support: int, top: int, fdr: float, n_docs: int,
             hypotheses: bool, n_hypotheses: int, llm_backend: str, llm_model: str | None, base_url: str | None,
             api_key: str | None, cache_path: str | None, no_cache: bool, examples: int, fmt: str,
             output: str | None) -> None:
    """Latents more frequent in one corpus than in the others: saeembed diff --store S A B [C ...].

    With several corpora each target is compared with the most frequent of the others.
    """
    from .analysis import diff

    st = open_existing_store(store)
    df = diff(st, list(corpora), target=target, paired=paired, pair_key=pair_key, threshold=threshold,
              min_diff=min_diff, min_support=min_support, top=top, fdr=fdr,
              examples=max(n_docs, examples, 4 if hypotheses else 0))
    if hypotheses:
        from .analysis.hypotheses import diff_hypotheses
        from .llm import make_llm, report_usage

        llm = make_llm(llm_backend, llm_model, base_url=base_url, api_key=api_key, cache=cache_path,
                       use_cache=not no_cache)
        try:
            hyp = diff_hypotheses(st, df, llm, n_hypotheses=n_hypotheses)
        finally:
            report_usage(llm)
            llm.close()
        if fmt == "html":
            return _html_report(st, hyp, output, 0, title="saeembed diff hypotheses")
        _emit(hyp, fmt, output, ["target", "other", "hypothesis", "freq_target", "freq_other", "diff", "p_value",
                                 "verified", "features"])
        return
    if fmt == "html":
        return _html_report(st, df, output, examples, title=f"saeembed diff: {' vs '.join(corpora)}")
    if fmt == "table":
        from .report.terminal import table_snippets

        df = table_snippets(st, df, "diff")
    if examples > 0:
        df = attach_examples(st, df, lambda r: [("+" + r["target"], d, r["feature_id"])
                                                for d in r["examples_target"][:examples]]
                             + [("-" + r["other"], d, r["feature_id"]) for d in r["examples_other"][:examples]])
    _emit(df, fmt, output, ["target", "rank", "feature_id", "label", "freq_target", "freq_other", "other", "diff",
                            "ratio", "q_value", "example"])
    if fmt == "table":
        _print_examples(df, lambda r: f"{r['target']} #{r['rank']} latent {r['feature_id']} {r['label'] or ''} "
                                      f"({r['freq_target']:.3f} vs {r['freq_other']:.3f} in {r['other']})")


@main.command("correlate")
@click.argument("corpus")
@store_option()
@click.option("--with", "with_corpus", help="a paired corpus (e.g. responses to CORPUS's prompts): correlate "
                                            "CORPUS's latents with its latents")
@click.option("--pair-key", help="with --with: pair documents by this meta field instead of by row")
@click.option("--top-features", type=click.IntRange(min=1), default=2000, show_default=True,
              help="the N most frequent latents")
@click.option("--min-support", type=click.IntRange(min=0), default=5, show_default=True,
              help="latents present in >= N documents")
@click.option("--min-cooccur", type=click.IntRange(min=1), default=3, show_default=True,
              help="pairs present together in >= N documents")
@click.option("--min-npmi", type=click.FloatRange(-1, 1), default=0.5, show_default=True)
@click.option("--threshold", type=float, default=0.0, show_default=True, help="present when max activation > this")
@click.option("--keep-similar-labels", is_flag=True, help="keep pairs whose labels are similar (cosine >= 0.2)")
@click.option("--token-check", is_flag=True, help="drop pairs that fire on the same/adjacent tokens (recomputes "
                                                   "token activations for a sample of co-active documents)")
@click.option("--top", type=click.IntRange(min=1), default=200, show_default=True, help="at most N pairs")
@_examples_option()
@format_option(with_parquet=True, with_html=True)
@_output_option()
def correlate_cmd(corpus: str, store: str, with_corpus: str | None, pair_key: str | None, top_features: int,
                  min_support: int, min_cooccur: int, min_npmi: float, threshold: float, keep_similar_labels: bool,
                  token_check: bool, top: int, examples: int, fmt: str, output: str | None) -> None:
    """Pairs of latents that occur in the same documents (NPMI): saeembed correlate --store S CORPUS."""
    from .analysis import correlate
    from .analysis.common import corpus_info
    from .analysis.correlate import coactive_documents

    st = open_existing_store(store)
    df = correlate(st, corpus, with_corpus=with_corpus, pair_key=pair_key, threshold=threshold,
                   top_features=top_features, min_support=min_support, min_cooccur=min_cooccur, min_npmi=min_npmi,
                   label_filter=not keep_similar_labels, token_check=token_check, top=top)
    if fmt == "html":
        return _html_report(st, df, output, examples, corpus=None if with_corpus else corpus,
                            title=f"saeembed correlate: {corpus}" + (f" with {with_corpus}" if with_corpus else ""))
    if examples > 0 and df.height:
        if with_corpus is not None:
            raise UserError("--examples shows documents where both latents fire; with --with they are in two "
                            "corpora, so leave --examples out")
        co = coactive_documents(st, corpus_info(st, corpus), df.head(EXAMPLE_ROWS), threshold, examples)
        df = attach_examples(st, df, lambda r: [(s, d, f) for d in co.get((r["feature_a"], r["feature_b"]), [])
                                                for s, f in (("a", r["feature_a"]), ("b", r["feature_b"]))])
    _emit(df, fmt, output, [c for c in df.columns if c != "examples"])
    if fmt == "table":
        _print_examples(df, lambda r: f"{r['feature_a']} {r['label_a'] or ''} ~ {r['feature_b']} {r['label_b'] or ''} "
                                      f"(NPMI {r['npmi']:.3f})")


@main.command("cluster")
@click.argument("corpus")
@store_option()
@click.option("--query", help="comma-separated keyphrases selecting latents by label (top N per phrase)")
@click.option("--features", help="comma-separated latent ids instead of --query")
@click.option("--unfiltered", is_flag=True, help="cluster on all latents (for comparison)")
@click.option("--method", type=click.Choice(["spectral", "hdbscan"]), default="spectral", show_default=True)
@click.option("--k", type=click.IntRange(min=2), help="number of clusters (spectral; default: eigengap)")
@click.option("--per-phrase", type=click.IntRange(min=1), default=100, show_default=True,
              help="latents per keyphrase")
@click.option("--min-cluster-size", type=click.IntRange(min=2), default=5, show_default=True,
              help="hdbscan minimum cluster size")
@click.option("--describe", type=click.Choice(["all", "selected"]), default="all", show_default=True,
              help="describe clusters by distinctive latents among all latents or the selected ones")
@click.option("--sample", type=click.IntRange(min=4), help="cluster a random sample of N documents")
@click.option("--threshold", type=float, default=0.0, show_default=True, help="present when max activation > this")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--per-document", is_flag=True, help="one row per document (doc_id, cluster, centrality) instead of "
                                                   "one per cluster")
@_examples_option()
@format_option(with_parquet=True, with_html=True)
@_output_option()
def cluster_cmd(corpus: str, store: str, query: str | None, features: str | None, unfiltered: bool, method: str,
                k: int | None, per_phrase: int, min_cluster_size: int, describe: str, sample: int | None,
                threshold: float, seed: int, per_document: bool, examples: int, fmt: str, output: str | None) -> None:
    """Cluster documents on the latents a query selects: saeembed cluster --store S CORPUS --query Q.

    One row per cluster (cluster -1: documents without any selected latent, or HDBSCAN noise)
    with its distinctive latents and most central documents.
    """
    from .analysis import cluster
    from .analysis.cluster import cluster_assignments

    st = open_existing_store(store)
    res = cluster(st, corpus, query=query, features=features, unfiltered=unfiltered, method=method, k=k,
                  per_phrase=per_phrase, threshold=threshold, min_cluster_size=min_cluster_size, describe=describe,
                  sample=sample, seed=seed)
    if per_document:
        if fmt == "html":
            return _html_report(st, cluster_assignments(res), output, 0, title=f"saeembed cluster: {corpus}")
        _emit(cluster_assignments(res), fmt, output)
        return
    if fmt == "html":
        how = f"query {query!r}" if query else (f"latents {features}" if features else "all latents")
        return _html_report(st, res, output, examples, title=f"saeembed cluster: {corpus}",
                            notes=[f"clustered on {how}"])
    if fmt == "table":
        from .report.terminal import table_snippets

        res = table_snippets(st, res, "cluster")
    if examples > 0:
        res = attach_examples(st, res, lambda r: [("central", d, r["top_features"][0])
                                                  for d in r["central_docs"][:examples]] if r["top_features"] else [])
    _emit(res, fmt, output, ["cluster", "size", "share", "top_features", "top_labels", "top_diffs", "central"])
    if fmt == "table":
        click.echo(f"\n{res['k'][0]} clusters ({method}) on {res['n_features'][0]} latents", err=True)
        _print_examples(res, lambda r: f"cluster {r['cluster']} ({r['size']} docs), central documents marked for "
                                       f"latent {r['top_features'][0]} {r['top_labels'][0]}")


@main.command("search")
@click.argument("corpus")
@click.argument("query")
@store_option()
@click.option("--k", type=click.IntRange(min=1), default=10, show_default=True, help="number of documents")
@click.option("--mode", type=click.Choice(["sae", "dense", "hybrid", "example"]), default="sae", show_default=True,
              help="sae: latents whose labels match QUERY; dense: MiniLM; hybrid: rank fusion of both; "
                   "example: QUERY is an example text, its own latents are the query")
@click.option("--n-features", type=click.IntRange(min=1), default=100, show_default=True,
              help="latents selected by label (sae/hybrid)")
@click.option("--temperature", type=click.FloatRange(0, min_open=True), default=0.2, show_default=True,
              help="T of the rank weights exp(-r/(k T)) (sae/hybrid)")
@click.option("--no-cache", is_flag=True, help="do not read or write the dense-embedding sidecar cache")
@_examples_option()
@format_option(with_parquet=True, with_html=True)
@_output_option()
def search_cmd(corpus: str, query: str, store: str, k: int, mode: str, n_features: int, temperature: float,
               no_cache: bool, examples: int, fmt: str, output: str | None) -> None:
    """Documents of CORPUS that match QUERY: saeembed search --store S CORPUS "QUERY" [--mode ...]."""
    from .analysis import search

    st = open_existing_store(store)
    df = search(st, corpus, query, k=k, mode=mode, n_features=n_features, temperature=temperature,
                cache=not no_cache)
    if fmt == "html":
        return _html_report(st, df, output, examples, title=f"saeembed search: {corpus}",
                            notes=[f"query {query!r}, mode {mode}"])
    if fmt == "table":
        from .report.terminal import table_snippets

        df = table_snippets(st, df, "search")
    if examples > 0 and "top_feature" in df.columns:
        df = attach_examples(st, df, lambda r: [("match", r["doc_id"], r["top_feature"])]
                             if r["rank"] <= examples and r["top_feature"] is not None else [])
    _emit(df, fmt, output, [c for c in df.columns if c != "examples"])
    if fmt == "table":
        _print_examples(df, lambda r: f"#{r['rank']} doc {r['doc_id']} (latent {r.get('top_feature')} "
                                      f"{r.get('top_label') or ''})")
