"""Training corpora: which files, which text column, how many documents, mixed so any prefix has them all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..corpus import read_corpus
from ..errors import UserError


@dataclass
class CorpusSpec:
    """One training corpus: a file, its text column, and optional caps.

    ``max_docs`` samples documents (seeded) rather than taking the head, because long-format
    files (one task or model after another) would otherwise contribute a single slice.
    ``max_chars`` trims long documents so a token budget spreads over more documents.
    """

    path: str
    text_col: str | None = None
    max_docs: int | None = None
    max_chars: int | None = None


def parse_corpus_spec(spec: str, text_col: str | None = None) -> CorpusSpec:
    """``path`` or ``path:col`` (the ``:col`` suffix is used only when ``path`` itself is not a file)."""
    if not Path(spec).exists() and ":" in spec:
        path, _, col = spec.rpartition(":")
        if Path(path).exists():
            return CorpusSpec(path=path, text_col=col or text_col)
    return CorpusSpec(path=spec, text_col=text_col)


def load_documents(specs: Sequence[CorpusSpec], seed: int = 0) -> list[str]:
    """Documents of all corpora, interleaved round-robin so any prefix is a mix of all of them.

    Why interleave: ``max_tokens`` stops caching early; without interleaving the last corpora
    would be missing from the training data.
    """
    per: list[list[str]] = []
    for i, spec in enumerate(specs):
        corpus = read_corpus(spec.path, text_col=spec.text_col, drop_empty=True)
        if corpus.kind != "text":
            raise UserError(f"{spec.path}: training reads plain text columns; pass --text-col")
        docs = corpus.docs["text"]
        rng = np.random.default_rng(seed + i)
        order = rng.permutation(len(docs))
        if spec.max_docs:
            order = order[: spec.max_docs]
        texts = [docs[int(j)] for j in order]
        if spec.max_chars:
            texts = [t[: spec.max_chars] for t in texts]
        per.append([t for t in texts if t and t.strip()])
    out: list[str] = []
    for j in range(max((len(p) for p in per), default=0)):
        out.extend(p[j] for p in per if j < len(p))
    return out
