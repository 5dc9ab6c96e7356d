"""Latent labels on the command line: ``labels import|list|export``, ``label`` (LLM) and ``keys``."""

from __future__ import annotations

from typing import Any

import click
import polars as pl

from ..errors import UserError
from ..labels.autointerp import AutoInterpConfig
from ..labels.budget import ScoringBudget
from ..llm.options import LLMOptions
from ..options import cli_options, from_cli
from .base import open_existing_store, store_option
from .output import emit, output_options


@click.group("labels", short_help="Import, list and export latent labels.")
def labels_group() -> None:
    """Import, list and export latent labels (several sources per latent are kept)."""


@labels_group.command("import", short_help="Import a label file for an SAE.")
@click.argument("file", type=click.Path())
@store_option()
@click.option("--sae", help="SAE id (or unique prefix) the labels belong to (default: the store's only SAE)")
@click.option("--source", help="label_source to record (default: neuronpedia:<model>, json:<stem> or csv:<stem>)")
@click.option("--score", "score_on", metavar="CORPUS",
              help="score the imported labels on CORPUS right away (as `labels score CORPUS --source ...`)")
@output_options
def labels_import(file: str, store: str, sae: str | None, source: str | None, score_on: str | None, fmt: str,
                  output: str | None) -> None:
    """Import FILE: a Neuronpedia explanations export (.jsonl[.gz]), JSON {id: label} or CSV feature_id,label.

    A score in the file measures something else than saeembed's (detection AUC), so it is kept in the
    description and the label stays unscored until `labels score CORPUS` (or --score CORPUS) measures it."""
    from ..labels import import_labels

    st = open_existing_store(store)
    if score_on is not None:
        st.corpus(score_on)  # an unknown corpus fails before anything is written
    res = import_labels(st, file, sae=sae, source=source)
    if score_on is None:
        click.echo("the imported labels are unscored; `saeembed labels score CORPUS` measures them", err=True)
    else:
        from ..labels.measure import score_store_labels

        scored = score_store_labels(st, score_on, sources=res["label_source"].to_list())
        res = res.join(scored.select("label_source", "scored", "at_or_above_floor", "median_score"),
                       on="label_source", how="left")
    emit(res, fmt, output)


@labels_group.command("score", short_help="Measure every label's detection score on a corpus.")
@click.argument("corpus")
@store_option()
@click.option("--source", "sources", multiple=True, help="only this label_source (repeatable; default: all)")
@cli_options(ScoringBudget)
@output_options
def labels_score(corpus: str, store: str, sources: tuple[str, ...], max_docs: int, max_tokens: int, fmt: str,
                 output: str | None) -> None:
    """Score the labels of CORPUS's SAE on CORPUS: detection AUC, how well a label's MiniLM similarity tells
    held-out windows where its latent fires from windows where it does not (0.5 chance, 1 perfect).
    Analyses show each latent's best-scoring label, and where none reaches the floor its strongest context,
    which this command takes from CORPUS for every latent that fires in the documents it reads."""
    from ..labels.measure import score_store_labels

    emit(score_store_labels(open_existing_store(store), corpus, list(sources) or None, max_docs, max_tokens),
         fmt, output)


@labels_group.command("describe", short_help="Store a corpus' latent descriptors as labels (source 'descriptor').")
@click.argument("corpus")
@store_option()
@cli_options(ScoringBudget)
@output_options
def labels_describe(corpus: str, store: str, max_docs: int, max_tokens: int, fmt: str, output: str | None) -> None:
    """Compute CORPUS's latent descriptors (the words most distinctive of the documents each latent fires on
    most) and store them as labels with label_source 'descriptor', next to the other sources, scored on
    CORPUS (see `labels score`): they then show in features / labels list where they score best, and are
    what --select labels matches. Descriptor selection (--select descriptors, the default for corpora of
    50+ documents) does not need this step."""
    from ..analysis.descriptors import DESCRIPTOR_LABEL_SOURCE, descriptor_labels
    from ..labels import write_labels
    from ..labels.measure import score_store_labels
    from ..store.corpusinfo import corpus_info

    st = open_existing_store(store)
    info = corpus_info(st, corpus)
    rows = descriptor_labels(st, info).filter(pl.col("label") != "")
    n = write_labels(st, info.sae, rows)
    scored = score_store_labels(st, corpus, [DESCRIPTOR_LABEL_SOURCE], max_docs, max_tokens)
    emit(pl.DataFrame({"corpus": [corpus], "sae": [info.sae], "label_source": [DESCRIPTOR_LABEL_SOURCE],
                       "labels": [n]}).join(scored.select("label_source", "scored", "at_or_above_floor",
                                                          "median_score"), on="label_source", how="left"),
         fmt, output)


@labels_group.command("list", short_help="Every label of every source.")
@store_option()
@click.option("--sae", help="SAE id or unique prefix (default: the store's only SAE)")
@click.option("--feature", "feature_ids", type=int, multiple=True, help="only these latents (repeatable)")
@click.option("--source", help="only this label_source")
@click.option("--limit", type=click.IntRange(min=1), help="at most N rows")
@output_options
def labels_list(store: str, sae: str | None, feature_ids: tuple[int, ...], source: str | None, limit: int | None,
                fmt: str, output: str | None) -> None:
    """Every label of every source, best score first per latent."""
    from ..labels import labels_of

    df = labels_of(open_existing_store(store), sae, list(feature_ids) or None)
    if source:
        df = df.filter(pl.col("label_source") == source)
    emit(df.head(limit) if limit else df, fmt, output)


@labels_group.command("export", short_help="Write labels as Neuronpedia JSONL, CSV or JSON.")
@click.argument("file", type=click.Path(dir_okay=False))
@store_option()
@click.option("--sae", help="SAE id or unique prefix (default: the store's only SAE)")
@click.option("--source", help="only this label_source (default: each latent's preferred label)")
@click.option("--all-sources", is_flag=True, help="every (latent, source) row instead of the preferred label")
@click.option("--as", "kind", type=click.Choice(["neuronpedia", "csv", "json"]),
              help="file format (default: from the name: .jsonl[.gz] Neuronpedia, .csv, .json)")
def labels_export(file: str, store: str, sae: str | None, source: str | None, all_sources: bool,
                  kind: str | None) -> None:
    """Write an SAE's labels to FILE in a format `labels import` (and Neuronpedia) read back."""
    from ..labels import export_labels
    from ..store.guard import check_output_path

    check_output_path(file, store)
    rows = export_labels(open_existing_store(store), file, sae=sae, fmt=kind, source=source, all_sources=all_sources)
    click.echo(f"wrote {rows.height} labels of {rows['sae'][0] if rows.height else sae} to {file}", err=True)


@click.command("label", short_help="Label latents with an LLM (detection-scored).")
@click.argument("corpus")
@store_option()
@click.option("--feature", "feature_ids", type=int, multiple=True, help="latent to label (repeatable)")
@click.option("--all-active", is_flag=True, help="label every latent that fires in at least --min-docs documents")
@click.option("--min-docs", type=click.IntRange(min=1), default=5, show_default=True,
              help="with --all-active: documents a latent needs")
@click.option("--limit", type=click.IntRange(min=1), help="with --all-active: at most N latents, most frequent first")
@cli_options(AutoInterpConfig)
@cli_options(LLMOptions)
@click.option("--dry-run", is_flag=True, help="print the labels without storing them")
@output_options
def label_cmd(corpus: str, store: str, feature_ids: tuple[int, ...], all_active: bool, min_docs: int,
              limit: int | None, dry_run: bool, fmt: str, output: str | None, **kwargs: Any) -> None:
    """Label latents of CORPUS with an LLM, scored by detection F1 on held-out examples."""
    from ..labels.autointerp import active_features, label_features
    from ..llm import llm_from_options, report_usage

    if bool(feature_ids) == all_active:
        raise UserError("pass either --feature F (repeatable) or --all-active")
    st = open_existing_store(store)
    if all_active:
        fids = active_features(st, corpus, min_docs=min_docs, limit=limit)["feature_id"].to_list()
        if not fids:
            raise UserError(f"no latent fires in {min_docs} documents of {corpus!r}; lower --min-docs")
    else:
        fids = list(feature_ids)
    llm = llm_from_options(from_cli(LLMOptions, kwargs))
    try:
        best, _ = label_features(st, corpus, fids, llm, from_cli(AutoInterpConfig, kwargs), write=not dry_run,
                                 progress=len(fids) > 1)
    finally:
        report_usage(llm)
        llm.close()
    emit(best.select("feature_id", "label", pl.col("auc").alias("score"), "f1", "accuracy", "n_active_docs",
                     "description"), fmt, output)


@click.group("keys", short_help="Store LLM API keys outside shell history.")
def keys_group() -> None:
    """API keys for LLM endpoints, kept in an owner-only file in the config folder (never on the command line)."""


@keys_group.command("set", short_help="Store a key (asked for, not echoed).")
@click.option("--base-url", help="the endpoint the key is for (default: every endpoint without a key of its own)")
@click.option("--stdin", "from_stdin", is_flag=True, help="read the key from standard input instead of asking")
def keys_set(base_url: str | None, from_stdin: bool) -> None:
    """Store an API key; it is asked for without echo (or read from stdin), so it never enters shell history."""
    import sys

    from ..llm.keys import set_key

    key = sys.stdin.readline().strip() if from_stdin else click.prompt("API key", hide_input=True)
    click.echo(f"stored the key in {set_key(key, base_url)} (readable by you only)", err=True)


@keys_group.command("list", short_help="The endpoints that have a stored key.")
def keys_list() -> None:
    """The endpoint hosts (and 'default') that have a stored key; the keys themselves are not shown."""
    from ..llm.keys import key_hosts, keys_file

    hosts = key_hosts()
    click.echo("\n".join(hosts) if hosts else f"no keys stored in {keys_file()}")


@keys_group.command("remove", short_help="Forget a stored key.")
@click.option("--base-url", help="the endpoint whose key to forget (default: the default key)")
def keys_remove(base_url: str | None) -> None:
    """Forget the key stored for an endpoint (or the default key)."""
    from ..llm.keys import remove_key

    if not remove_key(base_url):
        raise UserError(f"no key is stored for {base_url or 'default'}; see saeembed keys list")
    click.echo("removed", err=True)


COMMANDS = [labels_group, label_cmd, keys_group]
