"""Evaluation harness: SAE embeddings against dense embeddings on labelled real corpora.

    python -m saeembed.evaluate [--store eval.duckdb] [--docs 1000] [--only retrieval,clustering,...]
                                [--out benchmarks/results]

Every number on the docs site's evaluation page (docs/evaluation.md) comes from this package. Corpora are read from
``../shared/datasets`` (research-licensed, not shipped) or ``--data DIR``; they are encoded once
into ``--store`` (resumable) and reused by every task. Tables are printed as Markdown and written
to ``--out`` with a JSON twin, so a re-run shows exactly what changed.

The document-level SAE (``--doc-sae``, default ``doc``; ``''`` skips it) is encoded into its own
store, ``STORE_doc.duckdb`` next to ``--store``, from the very same corpus files, and adds the
``doc-sae`` columns to retrieval and the ``doc SAE`` rows to clustering.

The retrieval tasks are split once, by a rule fixed in code before any tuning
(:func:`~saeembed.evaluate.tasks.task_halves`), into a development half (where every method and
setting was chosen) and a held-out half; the report gives dev, held-out and full means. The style
tasks (``style``: irony, offensiveness, formality, voice, verbosity, ... on corpora no other task
reads, :data:`~saeembed.evaluate.tasks.STYLE_TASKS`) are split by the same rule.

Modules: ``tasks`` (corpora, queries, the split), ``harness`` (encoding), ``retrieval``,
``clustering``, ``steering`` (one-word clustering queries; its dev and held-out halves are whole
corpora), ``diffing``,
``correlation``, ``speed``, ``report`` (the command line).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .metrics import average_precision, markdown, precision_at
from .retrieval import full_ranking
from .tasks import CORPORA, RETRIEVAL_TASKS, STYLE_TASKS, task_halves


def main(argv: list[str] | None = None) -> None:
    from .report import main as run

    run(argv)


__all__ = ["main", "average_precision", "precision_at", "full_ranking", "markdown", "CORPORA", "RETRIEVAL_TASKS",
           "STYLE_TASKS", "task_halves"]
