"""Looking into a store: ``corpora``, ``features``, ``sql``, ``drop`` and ``show``."""

from __future__ import annotations

import click
import polars as pl

from .base import open_existing_store, store_option, use_color
from .output import emit, output_options


@click.command("corpora", short_help="List the corpora in the store.")
@store_option()
@output_options
def corpora_cmd(store: str, fmt: str, output: str | None) -> None:
    """List the corpora in the store with their reader, layer and SAE."""
    st = open_existing_store(store)
    with st.reading() as con:
        df = st.corpora()
        warn_unreadable(con)
    emit(df, fmt, output)


def warn_unreadable(con: object) -> None:
    """One stderr line per Parquet-kept corpus the connection had to leave out of ``activations``."""
    from ..store.parquet import unreadable_corpora

    for problem in unreadable_corpora(con).values():
        click.echo(f"warning: {problem} (left out of the activations view)", err=True)


@click.command("features", short_help="List latents, or search them by label.")
@store_option()
@click.option("--sae", help="only this SAE's latents (default: all)")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="at most N rows")
@click.option("--search", "query", help="rank latents by how well their labels match this text")
@click.option("--top", "--k", "k", type=click.IntRange(min=1), default=20, show_default=True,
              help="with --search: the best N latents")
@output_options
def features_cmd(store: str, sae: str | None, limit: int | None, query: str | None, k: int, fmt: str,
                 output: str | None) -> None:
    """List latents with their best label, or (--search) the latents whose labels best match a query."""
    st = open_existing_store(store)
    if query is not None:
        from ..labels import search_features

        df = search_features(st, query, k=k, sae=sae)
    else:
        df = st.features(sae)
    emit(df.head(limit) if limit else df, fmt, output)


@click.command("sql", short_help="Run read-only SQL over the store.")
@click.argument("query")
@store_option()
@output_options
def sql_cmd(query: str, store: str, fmt: str, output: str | None) -> None:
    """Run read-only SQL over the store (writes and file access are refused)."""
    from .. import store as store_mod
    from ..store.guard import check_read_only_sql

    check_read_only_sql(query)
    con = store_mod.connect(store, read_only=True, external_access=False)
    try:
        warn_unreadable(con)
        df = store_mod.StoreReader(con).sql(query)
    finally:
        con.close()
    emit(df, fmt, output)


@click.command("drop", short_help="Delete a corpus from the store.")
@click.argument("name")
@store_option()
@click.option("--parquet-dir", type=click.Path(file_okay=False),
              help="the --parquet-dir the corpus was encoded with (default: STORE.parquet/); only saeembed's own "
                   "files inside it are deleted")
@click.option("--keep-files", is_flag=True, help="drop the corpus but delete none of its Parquet files")
def drop_cmd(name: str, store: str, parquet_dir: str | None, keep_files: bool) -> None:
    """Delete corpus NAME (documents and activations) from the store, in one transaction; a corpus kept
    as Parquet (--keep parquet) loses its registration and its Parquet files are deleted: only files
    saeembed named (<name>-c<id>-<hex>/data_N.parquet) inside the Parquet folder, anything else is
    refused before the store changes."""
    files = open_existing_store(store).drop(name, parquet_dir=parquet_dir, keep_files=keep_files)
    extra = f" and deleted its {len(files)} Parquet file(s)" if files else ""
    click.echo(f"dropped {name!r} from {store}{extra}", err=True)


@click.command("show", short_help="Show a document with a latent's tokens highlighted.")
@click.argument("doc_id", type=int)
@click.option("--feature", "feature_ids", type=int, multiple=True, required=True,
              help="latent to highlight (repeatable)")
@store_option()
@click.option("--format", "fmt", type=click.Choice(["table", "json", "ndjson", "csv"]), default="table",
              show_default=True, help="table: highlighted text; json/ndjson/csv: tokens with activations")
@click.option("--color/--no-color", default=None,
              help="colour the highlights (default: on a terminal unless NO_COLOR is set; off: <<markers>>)")
def show_cmd(doc_id: int, feature_ids: tuple[int, ...], store: str, fmt: str, color: bool | None) -> None:
    """Print document DOC_ID with the tokens where each --feature fires highlighted."""
    from ..highlight.recompute import render, token_activations

    st = open_existing_store(store)
    tokens = token_activations(st, [doc_id], list(feature_ids))
    if fmt != "table":
        emit(tokens, fmt)
        return
    style = "ansi" if (use_color() if color is None else color) else "markers"
    sae = st.sql("SELECT c.sae FROM documents d JOIN corpora c USING (corpus_id) WHERE d.doc_id = ?", [doc_id])
    feats = st.features(sae["sae"][0]) if sae.height else pl.DataFrame({"feature_id": [], "label": []})
    labels = dict(zip(feats["feature_id"], feats["label"]))
    for i, f in enumerate(dict.fromkeys(feature_ids)):
        sel = tokens.filter(pl.col("feature_id") == f)
        top = float(sel["activation"].max() or 0.0)
        n_on = int((sel["activation"] > 0).sum())
        head = f"doc {doc_id} · feature {f}" + (f" ({labels[f]})" if f in labels else "") + \
               f" · max {top:.3g} on {n_on} of {sel.height} tokens"
        click.echo(("\n" if i else "") + head)
        click.echo(render(tokens, doc_id, f, style=style))


COMMANDS = [corpora_cmd, features_cmd, sql_cmd, drop_cmd, show_cmd]
