"""The ``saeembed`` command line: one click group; every command is a thin shell over the Python API.

Commands live in one module per topic (:mod:`.encode`, :mod:`.query`, :mod:`.analysis`,
:mod:`.labels`, :mod:`.train`, :mod:`.faces`) and are added to :data:`main` explicitly below; no module imports
this one, so there is no import cycle. Options of the analyses, encode and LLM calls are generated
from the same dataclasses the Python functions take (:mod:`saeembed.options`). ``SAEEMBED_STORE``
stands in for ``--store``; every listing command takes ``--format table|csv|tsv|json|ndjson|parquet``
and ``--output FILE``. Errors a user can cause are one line on stderr and exit status 2.
"""

from __future__ import annotations

import click

from . import analysis, encode, faces, labels, query, train
from .base import CONTEXT, SaeembedGroup


@click.group(cls=SaeembedGroup, context_settings=CONTEXT)
@click.version_option(package_name="saeembed")
def main() -> None:
    """SAE embeddings of text corpora in DuckDB: encode, then diff, correlate, cluster and search."""


for _command in (encode.encode_cmd, *query.COMMANDS, *analysis.COMMANDS, *labels.COMMANDS, *train.COMMANDS,
                 *faces.COMMANDS):
    main.add_command(_command)

__all__ = ["main"]
