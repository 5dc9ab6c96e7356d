"""Offline labels for a document-level SAE: the distinctive words of each latent's top documents.

A latent of an SAE on document embeddings (:mod:`saeembed.reader.doc`) fires once per document,
so the token c-TF-IDF of :mod:`saeembed.labels_offline` has no activating token to name. The
natural offline label is the one corpus descriptors use: the words most distinctive of the
``top_n`` documents where the latent is largest, against all labelling documents (document-level
c-TF-IDF, :func:`saeembed.analysis.descriptors.distinctive_words`). Rows have the schema of
:mod:`saeembed.labels_offline` (source ``offline-ctfidf``), so the store, ``labels list``,
``features --search`` and label selection treat them like the token-level SAE's labels.
``score`` is the share of the top documents that contain the label's first word.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import polars as pl
import torch

from .labels_offline import LABEL_COLUMNS, LABEL_SOURCE

TOP_DOCS = 50  # top documents per latent; doc-level latents are dense (k of d_sae per document)


@torch.no_grad()
def doc_codes(sae: Any, vectors: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """SAE codes [n_docs, d_sae] (float32) of document vectors [n_docs, d_in]."""
    out = np.zeros((len(vectors), sae.d_sae), np.float32)
    for s in range(0, len(vectors), batch_size):
        out[s:s + batch_size] = sae.encode(torch.from_numpy(vectors[s:s + batch_size]).float()).numpy()
    return out


def label_doc_latents(sae: Any, vectors: np.ndarray, texts: Sequence[str], top_n: int = TOP_DOCS,
                      n_words: int = 4, context_chars: int = 120) -> pl.DataFrame:
    """One row per latent: label (distinctive words of its top documents), score, density, description."""
    from .analysis.descriptors import distinctive_words

    codes = doc_codes(sae, vectors)
    n = len(texts)
    counts = (codes > 0).sum(0)
    tops: list[np.ndarray] = []
    for j in range(sae.d_sae):
        col = codes[:, j]
        fired = np.flatnonzero(col > 0)
        if len(fired) > top_n:
            fired = fired[np.argpartition(-col[fired], top_n - 1)[:top_n]]
        tops.append(fired[np.argsort(-col[fired])])
    words = distinctive_words(list(texts), tops, n_words)
    low = [str(t).lower() for t in texts]
    rows = []
    for j in range(sae.d_sae):
        top, density = tops[j], float(counts[j]) / max(n, 1)
        if len(top) == 0:
            rows.append((j, "(dead)", LABEL_SOURCE, 0.0, 0.0, f"never fired on the {n:,} documents labelling read"))
            continue
        label = words[j] or "(no distinctive words)"
        first = label.split(", ")[0]
        pat = re.compile(rf"\b{re.escape(first)}\b")
        share = float(np.mean([bool(pat.search(low[i])) for i in top])) if words[j] else 0.0
        ctx = " ".join(str(texts[int(top[0])]).split())[:context_chars]
        desc = (f"distinctive words of the {len(top)} documents where the latent is largest; first word in "
                f"{share:.0%} of them; fires on {density:.2%} of documents; top document: {ctx}")
        rows.append((j, label, LABEL_SOURCE, share, density, desc))
    return pl.DataFrame(rows, schema=LABEL_COLUMNS, orient="row")


__all__ = ["TOP_DOCS", "doc_codes", "label_doc_latents"]
