"""CLI commands for latent labels: ``labels import``, ``labels list``, ``label`` (LLM) and ``show``."""

from __future__ import annotations

import sys

import click
import polars as pl

from .cli import main, open_existing_store, store_option
from .errors import UserError
from .output import emit, format_option


@main.group()
def labels() -> None:
    """Import and inspect latent labels (several sources per latent are kept)."""


@labels.command("import")
@click.argument("file", type=click.Path())
@store_option()
@click.option("--sae", help="SAE id (or unique prefix) the labels belong to (default: the store's only SAE)")
@click.option("--source", help="label_source to record (default: neuronpedia:<model>, json:<stem> or csv:<stem>)")
@format_option()
def labels_import(file: str, store: str, sae: str | None, source: str | None, fmt: str) -> None:
    """Import FILE: a Neuronpedia explanations export (.jsonl[.gz]), JSON {id: label} or CSV feature_id,label."""
    from .labels import import_labels

    res = import_labels(open_existing_store(store), file, sae=sae, source=source)
    emit(res, fmt)


@labels.command("list")
@store_option()
@click.option("--sae", help="SAE id or unique prefix (default: the store's only SAE)")
@click.option("--feature", "feature_ids", type=int, multiple=True, help="only these latents (repeatable)")
@click.option("--source", help="only this label_source")
@click.option("--limit", type=int, help="at most N rows")
@format_option()
def labels_list(store: str, sae: str | None, feature_ids: tuple[int, ...], source: str | None, limit: int | None,
                fmt: str) -> None:
    """Every label of every source, best score first per latent."""
    from .labels import labels_of

    df = labels_of(open_existing_store(store), sae, list(feature_ids) or None)
    if source:
        df = df.filter(pl.col("label_source") == source)
    emit(df.head(limit) if limit else df, fmt)


@main.command()
@click.argument("corpus")
@store_option()
@click.option("--feature", "feature_ids", type=int, multiple=True, help="latent to label (repeatable)")
@click.option("--all-active", is_flag=True, help="label every latent that fires in at least --min-docs documents")
@click.option("--min-docs", type=int, default=5, show_default=True, help="with --all-active: documents a latent needs")
@click.option("--limit", type=int, help="with --all-active: at most N latents, most frequent first")
@click.option("--llm-backend", type=click.Choice(["openai", "local"]), default="openai", show_default=True,
              help="openai: any OpenAI-compatible endpoint (OpenAI, OpenRouter, vLLM, Ollama); local: transformers")
@click.option("--llm-model", envvar="SAEEMBED_LLM_MODEL",
              help="model name at the endpoint, or (local) a model path / hub id (default local: SmolLM2-Instruct)")
@click.option("--base-url", envvar="SAEEMBED_LLM_BASE_URL", help="endpoint base URL, e.g. http://localhost:11434/v1")
@click.option("--api-key", help="API key (default: SAEEMBED_LLM_API_KEY or OPENAI_API_KEY)")
@click.option("--candidates", type=int, default=1, show_default=True, help="labels per latent; the best by F1 is kept")
@click.option("--examples", type=int, default=8, show_default=True, help="activating examples shown to the explainer")
@click.option("--holdout", type=int, default=5, show_default=True,
              help="held-out activating (and as many non-activating) examples for detection scoring")
@click.option("--workers", type=int, default=4, show_default=True, help="concurrent LLM requests")
@click.option("--max-retries", type=int, default=5, show_default=True, help="retries on 429/5xx answers")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="seconds to wait for one LLM answer (a silent endpoint is given up after two)")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False),
              help="response cache file (default ~/.cache/saeembed/llm/completions.sqlite)")
@click.option("--no-cache", is_flag=True, help="always call the LLM")
@click.option("--dry-run", is_flag=True, help="print the labels without storing them")
@format_option()
def label(corpus: str, store: str, feature_ids: tuple[int, ...], all_active: bool, min_docs: int, limit: int | None,
          llm_backend: str, llm_model: str | None, base_url: str | None, api_key: str | None, candidates: int,
          examples: int, holdout: int, workers: int, max_retries: int, timeout: float, cache_path: str | None, no_cache: bool,
          dry_run: bool, fmt: str) -> None:
    """Label latents of CORPUS with an LLM, scored by detection F1 on held-out examples."""
    from .autointerp import AutoInterpConfig, active_features, label_features
    from .llm import make_llm, report_usage

    if bool(feature_ids) == all_active:
        raise UserError("pass either --feature F (repeatable) or --all-active")
    st = open_existing_store(store)
    if all_active:
        fids = active_features(st, corpus, min_docs=min_docs, limit=limit)["feature_id"].to_list()
        if not fids:
            raise UserError(f"no latent fires in {min_docs} documents of {corpus!r}; lower --min-docs")
    else:
        fids = list(feature_ids)
    llm = make_llm(llm_backend, llm_model, base_url=base_url, api_key=api_key, cache=cache_path,
                   use_cache=not no_cache, workers=workers, max_retries=max_retries, timeout=timeout)
    try:
        cfg = AutoInterpConfig(n_explain=examples, n_holdout=holdout, candidates=candidates)
        best, _ = label_features(st, corpus, fids, llm, cfg, write=not dry_run, progress=len(fids) > 1)
    finally:
        report_usage(llm)
        llm.close()
    emit(best.select("feature_id", "label", pl.col("f1").alias("score"), "accuracy", "n_active_docs",
                     "description"), fmt)


@main.command()
@click.argument("doc_id", type=int)
@click.option("--feature", "feature_ids", type=int, multiple=True, required=True, help="latent to highlight (repeatable)")
@store_option()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table: highlighted text; json: tokens with activations")
def show(doc_id: int, feature_ids: tuple[int, ...], store: str, fmt: str) -> None:
    """Print document DOC_ID with the tokens where each --feature fires highlighted."""
    from .highlight import render, token_activations

    st = open_existing_store(store)
    tokens = token_activations(st, [doc_id], list(feature_ids))
    if fmt == "json":
        emit(tokens, "json")
        return
    style = "ansi" if sys.stdout.isatty() else "markers"
    sae = st.sql("SELECT c.sae FROM documents d JOIN corpora c USING (corpus_id) WHERE d.doc_id = ?", [doc_id])
    feats = st.features(sae["sae"][0]) if sae.height else pl.DataFrame({"feature_id": [], "label": []})
    labels = {f: lab for f, lab in zip(feats["feature_id"], feats["label"])}
    for i, f in enumerate(dict.fromkeys(feature_ids)):
        sel = tokens.filter(pl.col("feature_id") == f)
        top = float(sel["activation"].max() or 0.0)
        n_on = int((sel["activation"] > 0).sum())
        head = f"doc {doc_id} · feature {f}" + (f" ({labels[f]})" if f in labels else "") + \
               f" · max {top:.3g} on {n_on} of {sel.height} tokens"
        click.echo(("\n" if i else "") + head)
        click.echo(render(tokens, doc_id, f, style=style))
