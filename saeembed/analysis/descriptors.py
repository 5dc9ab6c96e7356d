"""Corpus descriptors: what a latent means in *this* corpus, as a vector a query can be matched to.

The offline labels name the *words* a latent fires on (c-TF-IDF over token windows), so a query
such as "sentiment" matches latents of the words "positive, negative" rather than latents of
evaluative tone. A descriptor describes a latent by the documents it fires on most strongly:

    descriptor_i = mean(MiniLM(d) for d in the top documents of latent i) − mean(MiniLM(d) for d in the corpus)

(contrast with the corpus mean, so what every document shares cancels). A query phrase is matched
by cosine similarity to the descriptors, which asks "do the documents this latent fires on look
more like the query than the average document does?" — the concept, not the word. Everything is
computed from the store alone (the corpus' activations and its texts; no labels, no LLM) and cached
in a sidecar ``<store>.descriptors/<corpus>.npz`` keyed by the corpus' identity, so it is computed
once per corpus (the MiniLM document embeddings are shared with the dense search's sidecar).

Each descriptor also gets a readable text: the words most distinctive of the latent's top
documents against the whole corpus (document-level c-TF-IDF), shown by ``features`` and usable
as the label source ``descriptor`` (:func:`descriptor_labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ..embed import DEFAULT_EMBEDDER
from ..labels.ctfidf import distinctive_words
from ..memo import Memo
from .dense import aligned_doc_embeddings, sidecar_name

if TYPE_CHECKING:
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store

DESCRIPTOR_TOP = 100  # top documents per latent averaged into its descriptor (chosen on the dev tasks)
MIN_DOCS = 3  # a latent present in fewer documents has no descriptor (too noisy)
DESCRIPTOR_LABEL_SOURCE = "descriptor"
VERSION = 2  # bump when the computation changes: old sidecars are then recomputed

_MEMO: Memo[Descriptors] = Memo("corpus descriptors", max_entries=8)


@dataclass
class Descriptors:
    """Descriptors of the latents of one corpus (rows aligned across the arrays)."""

    feature_ids: np.ndarray  # int64 [m]
    vectors: np.ndarray  # float32 [m, dim], contrast vectors (not normalised)
    n_present: np.ndarray  # int64 [m], documents where the latent fires
    texts: list[str]  # readable descriptor: distinctive words of the top documents

    @property
    def unit(self) -> np.ndarray:
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        return self.vectors / np.maximum(norms, 1e-12)

    def similarity(self, query_vec: np.ndarray) -> np.ndarray:
        """Cosine similarity of every descriptor to a (normalised) query embedding."""
        return (self.unit @ query_vec.astype(np.float32)).astype(np.float64)


def _stamp(info: CorpusInfo, top: int) -> str:
    parts = (f"v{VERSION}", info.corpus_id, info.n_docs, info.created_at, info.sae, top, DEFAULT_EMBEDDER)
    return "|".join(map(str, parts))


def _sidecar(store: Store, info: CorpusInfo) -> Path:
    return Path(str(store.path) + ".descriptors") / f"{sidecar_name(info)}.npz"


def corpus_descriptors(store: Store, info: CorpusInfo, top: int = DESCRIPTOR_TOP, cache: bool = True) -> Descriptors:
    """The descriptors of every latent that fires in at least ``MIN_DOCS`` documents of the corpus.

    Read from the sidecar when it matches the corpus, else computed (one pass over the corpus'
    activations plus the MiniLM embeddings of its documents) and written there.
    """
    stamp = _stamp(info, top)
    key = f"{store.path}|{stamp}"
    return _MEMO.get_or_build(key, lambda: _load_or_compute(store, info, top, stamp, cache))


def _load_or_compute(store: Store, info: CorpusInfo, top: int, stamp: str, cache: bool) -> Descriptors:
    side = _sidecar(store, info)
    if cache and side.exists():
        try:
            with np.load(side, allow_pickle=False) as z:
                if str(z["stamp"]) == stamp:
                    return Descriptors(z["feature_ids"].astype(np.int64), z["vectors"].astype(np.float32),
                                       z["n_present"].astype(np.int64), [str(t) for t in z["texts"]])
        except Exception:  # noqa: BLE001 - a damaged cache is recomputed, never fatal
            pass
    desc = compute_descriptors(store, info, top, cache)
    if cache:
        try:
            from ..fsutil import atomic_write

            side.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(side, lambda fh: np.savez(fh, stamp=np.array(stamp), feature_ids=desc.feature_ids,
                                                   vectors=desc.vectors.astype(np.float16),
                                                   n_present=desc.n_present, texts=np.array(desc.texts)))
        except OSError:
            pass  # read-only location: recomputed next process
    desc.vectors = desc.vectors.astype(np.float16).astype(np.float32)  # the precision it is cached at
    return desc


def compute_descriptors(store: Store, info: CorpusInfo, top: int = DESCRIPTOR_TOP, cache: bool = True) -> Descriptors:
    """Compute descriptors from the corpus' activations and MiniLM document embeddings (no cache)."""
    mat, doc_ids = store.embeddings(info.name)
    emb = aligned_doc_embeddings(store, info, doc_ids, cache)
    mean = emb.mean(axis=0) if len(emb) else np.zeros(emb.shape[1], np.float32)
    csc = mat.tocsc()
    counts = np.diff(csc.indptr)
    feats = np.flatnonzero(counts >= MIN_DOCS)
    vectors = np.zeros((len(feats), emb.shape[1]), np.float32)
    tops: list[np.ndarray] = []
    for j, f in enumerate(feats):
        lo, hi = csc.indptr[f], csc.indptr[f + 1]
        rows, vals = csc.indices[lo:hi], csc.data[lo:hi]
        if len(rows) > top:
            keep = np.argpartition(-vals, top - 1)[:top]
            rows = rows[keep]
        tops.append(rows)
        vectors[j] = emb[rows].mean(axis=0) - mean
    texts = _descriptor_texts(store, info, tops)
    return Descriptors(feats.astype(np.int64), vectors, counts[feats].astype(np.int64), texts)




def _descriptor_texts(store: Store, info: CorpusInfo, tops: list[np.ndarray], n_words: int = 4) -> list[str]:
    """Distinctive words of each latent's top documents in the corpus (see :func:`distinctive_words`)."""
    docs = store.sql("SELECT text FROM documents WHERE corpus_id = ? ORDER BY doc_id", [info.corpus_id])
    return distinctive_words(docs["text"].to_list(), tops, n_words)


def descriptor_labels(store: Store, info: CorpusInfo, top: int = DESCRIPTOR_TOP) -> pl.DataFrame:
    """The descriptors as label rows (feature_id, label, label_source ``descriptor``, density,
    description): for ``saeembed labels`` / ``features`` to show next to the other sources."""
    desc = corpus_descriptors(store, info, top)
    n = max(int(info.n_docs), 1)
    return pl.DataFrame({"feature_id": desc.feature_ids.astype(np.int32), "label": desc.texts,
                         "label_source": [DESCRIPTOR_LABEL_SOURCE] * len(desc.texts),
                         "density": desc.n_present / n,
                         "description": [f"distinctive words of the {top} documents of {info['name']!r} where the "
                                         "latent fires most"] * len(desc.texts)})


__all__ = ["Descriptors", "corpus_descriptors", "compute_descriptors", "descriptor_labels",
           "DESCRIPTOR_TOP", "DESCRIPTOR_LABEL_SOURCE"]
