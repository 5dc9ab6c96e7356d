"""How much of a corpus label scoring reads: one definition for ``score_store_labels`` and the CLI.

Why a module of its own: the CLI builds its ``--docs``/``--tokens`` flags from these fields at start-up,
and the scoring code imports the reader and torch; keeping the budget here lets the flags and the
Python defaults be one definition without loading either.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option

SCORE_DOCS = 400  # documents read at most
SCORE_TOKENS = 20_000  # token windows embedded at most


@dataclass(frozen=True)
class ScoringBudget:
    """The reader runs on the documents read, so they set the cost (seconds for a few hundred short
    documents on a CPU); the windows embedded bound the MiniLM part."""

    max_docs: int = option(SCORE_DOCS, "documents of CORPUS read to score the labels", "--docs", min=10)
    max_tokens: int = option(SCORE_TOKENS, "token windows embedded at most", "--tokens", min=100)


__all__ = ["ScoringBudget", "SCORE_DOCS", "SCORE_TOKENS"]
