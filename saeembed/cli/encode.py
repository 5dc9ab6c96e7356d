"""``saeembed encode``: a corpus file (or ``-`` for JSON lines on stdin) into the store."""

from __future__ import annotations

from typing import Any

import click

from ..encode.options import EncodeOptions
from ..options import cli_options, from_cli
from .base import store_option
from .output import emit, output_options


@click.command("encode", short_help="Encode a corpus into the store (resumable).")
@click.argument("corpus", type=click.Path(allow_dash=True))
@store_option()
@click.option("--name", help="corpus name in the store: 1-64 letters, digits, _ - . (default: the file's stem)")
@cli_options(EncodeOptions)
@output_options(quiet_default=True)
def encode_cmd(corpus: str, store: str, name: str | None, fmt: str | None, output: str | None, **kwargs: Any) -> None:
    """Encode CORPUS (parquet/csv/tsv/jsonl/json/txt, a folder of .txt files, or - for JSON lines on
    stdin) into the store. Re-run the same command to resume after a crash.

    Progress and a one-line summary go to stderr; stdout stays empty unless --format asks for the
    stored corpus' registry row. The text is read from --text-col, else the first of the columns
    text, document, content, output, response, body that exists, else the only text column; the log
    names the column it read. --where keeps the rows matching an SQL condition (DuckDB, over the
    source's columns), e.g. --where "generator = 'gpt4_1106_preview'".
    """
    import polars as pl

    from ..encode import encode_corpus
    from ..names import default_corpus_name

    if name is None:
        name = "stdin" if corpus == "-" else default_corpus_name(corpus)
    row = encode_corpus(store, corpus, name, from_cli(EncodeOptions, kwargs))
    if fmt is not None or output:
        emit(pl.DataFrame([{k: v for k, v in row.items() if k != "config"}]), fmt or "table", output)
