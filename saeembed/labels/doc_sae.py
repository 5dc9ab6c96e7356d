"""Offline labels for a document-level SAE: the distinctive words of each latent's top documents.

A latent of an SAE on document embeddings (:mod:`saeembed.reader.doc`) fires once per document,
so the token c-TF-IDF of :mod:`saeembed.labels.offline` has no activating token to name. The
natural offline label is the one corpus descriptors use: the words most distinctive of the
``top_n`` documents where the latent is largest, against all labelling documents (document-level
c-TF-IDF, :func:`saeembed.labels.ctfidf.distinctive_words`). Rows have the schema of
:mod:`saeembed.labels.offline` (source ``offline-ctfidf``), so the store, ``labels list``,
``features --search`` and label selection treat them like the token-level SAE's labels.
The description gives the share of the top documents that contain the label's first word;
``score`` is left empty until the label's detection AUC is measured (as in :mod:`saeembed.labels.offline`).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import polars as pl
import torch

from ..labelrule import DEAD_LABEL
from .offline import LABEL_COLUMNS, LABEL_SOURCE

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
    from .ctfidf import distinctive_words

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
            rows.append((j, DEAD_LABEL, LABEL_SOURCE, 0.0, 0.0, f"never fired on the {n:,} documents labelling read"))
            continue
        label = words[j] or "(no distinctive words)"
        first = label.split(", ")[0]
        pat = re.compile(rf"\b{re.escape(first)}\b")
        share = float(np.mean([bool(pat.search(low[i])) for i in top])) if words[j] else 0.0
        ctx = " ".join(str(texts[int(top[0])]).split())[:context_chars]
        desc = (f"distinctive words of the {len(top)} documents where the latent is largest; first word in "
                f"{share:.0%} of them; fires on {density:.2%} of documents; top document: {ctx}")
        rows.append((j, label, LABEL_SOURCE, None, density, desc))
    return pl.DataFrame(rows, schema=LABEL_COLUMNS, orient="row")


def cached_documents(cache_dir: Any, specs: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
    """The vectors of a document-level activation cache and their texts: the cache's ``doc`` index is
    the document's position in :func:`saeembed.train.load_documents` with the cache's seed."""
    from ..train import ActivationCache, load_documents

    ac = ActivationCache(cache_dir)
    texts = load_documents(specs, seed=ac.manifest["seed"])
    vecs, docs = [], []
    for i in range(len(ac.paths)):
        c = ac.load(i)
        vecs.append(c["acts"].astype(np.float32))
        docs.append(c["doc"])
    return np.concatenate(vecs), [texts[int(d)] for d in np.concatenate(docs)]


def label_doc_cache(sae: Any, cache_dir: Any, specs: Sequence[Any], top_n: int = TOP_DOCS) -> pl.DataFrame:
    """:func:`label_doc_latents` over the documents of a document-level activation cache."""
    vecs, texts = cached_documents(cache_dir, specs)
    return label_doc_latents(sae, vecs, texts, top_n=top_n)


__all__ = ["TOP_DOCS", "doc_codes", "label_doc_latents", "cached_documents", "label_doc_cache"]
