"""The ``saeembed`` command line: a click group; each command is a thin shell over the Python API.

Commands that print results take ``--format table|csv|json``. ``SAEEMBED_STORE`` stands in for
``--store``. A :class:`UserError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import UserError
from .output import emit, format_option


class _Group(click.Group):
    """Turns UserError into one clean line instead of a traceback."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="saeembed")
def main() -> None:
    """SAE embeddings of text corpora in DuckDB: encode, then diff, correlate, cluster and search."""


def store_option(required: bool = True):  # noqa: ANN201 - click decorator
    return click.option("--store", "store", envvar="SAEEMBED_STORE", required=required,
                        type=click.Path(dir_okay=False), help="DuckDB store file (or SAEEMBED_STORE)")


def open_existing_store(path: str):  # noqa: ANN201
    from .api import open_store

    if not Path(path).exists():
        raise UserError(f"store {path} does not exist; encode a corpus first (saeembed encode CORPUS --store {path} --name NAME)")
    return open_store(path)


@main.command()
@click.argument("corpus", type=click.Path())
@store_option()
@click.option("--name", help="corpus name in the store (default: the file's stem)")
@click.option("--text-col", help="column holding the document text (default: text, or the only string column)")
@click.option("--messages-col", help="column holding chat messages [{role, content}] instead of plain text")
@click.option("--reader", help="Hugging Face model id or local path (default: the SAE's reader, SmolLM2-135M-Instruct)")
@click.option("--layer", type=int, help="block whose output (resid_post) the SAE reads (default: the SAE's)")
@click.option("--sae", default="default", show_default=True, help="SAE spec: default, a directory, saelens:..., hf:...")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--dtype", default="auto", show_default=True, help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16")
@click.option("--chat-template/--no-chat-template", default=None,
              help="wrap each document as one assistant message (default: on when the reader has a template)")
@click.option("--include-special", is_flag=True, help="also pool template/special tokens (off: they pollute the max-pool)")
@click.option("--window", type=int, help="tokens per window; longer documents are split and max-pooled across windows")
@click.option("--batch-tokens", type=int, default=4096, show_default=True, help="padded tokens per forward batch")
@click.option("--shard-docs", type=int, default=256, show_default=True, help="documents per crash-safe shard")
@click.option("--drop-empty", is_flag=True, help="skip rows with empty or null text instead of refusing the corpus")
@click.option("--limit", type=int, help="encode only the first N rows")
@click.option("--quiet", is_flag=True, help="no progress bar")
@format_option()
def encode(corpus: str, store: str, name: str | None, text_col: str | None, messages_col: str | None,
           reader: str | None, layer: int | None, sae: str, device: str, dtype: str, chat_template: bool | None,
           include_special: bool, window: int | None, batch_tokens: int, shard_docs: int, drop_empty: bool,
           limit: int | None, quiet: bool, fmt: str) -> None:
    """Encode CORPUS (parquet/csv/jsonl/txt) into the store. Re-run the same command to resume."""
    import polars as pl

    from .encode import encode_corpus

    if batch_tokens <= 0 or shard_docs <= 0:
        raise UserError("--batch-tokens and --shard-docs must be positive")
    row = encode_corpus(store, corpus, name or Path(corpus).stem, text_col=text_col, messages_col=messages_col,
                        reader=reader, layer=layer, sae=sae, device=device, dtype=dtype,
                        chat_template=chat_template, include_special=include_special, window=window,
                        batch_tokens=batch_tokens, shard_docs=shard_docs, drop_empty=drop_empty,
                        limit=limit, progress=not quiet)
    emit(pl.DataFrame([{k: v for k, v in row.items() if k != "config"}]), fmt)


@main.command()
@store_option()
@format_option()
def corpora(store: str, fmt: str) -> None:
    """List the corpora in the store with their reader, layer and SAE."""
    emit(open_existing_store(store).corpora(), fmt)


@main.command()
@store_option()
@click.option("--sae", help="only this SAE's latents (default: all)")
@click.option("--limit", type=int, default=None, help="at most N rows")
@click.option("--search", "query", help="rank latents by how well their labels match this text")
@click.option("--k", type=int, default=20, show_default=True, help="with --search: the best K latents")
@format_option()
def features(store: str, sae: str | None, limit: int | None, query: str | None, k: int, fmt: str) -> None:
    """List latents with their best label, or (--search) the latents whose labels best match a query."""
    if query is not None:
        from .labels import search_features

        df = search_features(open_existing_store(store), query, k=k, sae=sae)
    else:
        df = open_existing_store(store).features(sae)
    emit(df.head(limit) if limit else df, fmt)


@main.command()
@click.argument("query")
@store_option()
@format_option()
def sql(query: str, store: str, fmt: str) -> None:
    """Run read-only SQL over the store (writes and file access are refused)."""
    from . import store as store_mod

    con = store_mod.connect(store, read_only=True, external_access=False)
    try:
        emit(store_mod.StoreReader(con).sql(query), fmt)
    finally:
        con.close()


@main.command()
@click.argument("name")
@store_option()
def drop(name: str, store: str) -> None:
    """Delete corpus NAME (documents and activations) from the store."""
    open_existing_store(store).drop(name)
    click.echo(f"dropped {name!r} from {store}", err=True)


# Command modules register themselves on ``main`` when imported (one line each, below).
from . import cli_train  # noqa: E402,F401
from . import cli_labels  # noqa: E402,F401
from . import cli_analysis  # noqa: E402,F401
from . import cli_faces  # noqa: E402,F401
