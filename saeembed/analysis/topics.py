"""A corpus' own topics: groups of its documents by what they are about, named by their distinctive words.

Why: a query such as "topic", "genre" or "news category" asks for the corpus' own categories, which no
reader knows in advance (the shipped reader answers "topic" with "sports, games, movies, tv" whatever
the corpus holds). The corpus itself says what its topics are: k-means on the documents' MiniLM
embeddings (the same embeddings descriptors and dense search use) groups them by subject, and the
words most distinctive of each group (document-level c-TF-IDF,
:func:`~saeembed.labels.ctfidf.distinctive_words`) name it. Two uses:

- the grounding check (:mod:`saeembed.analysis.grounding`) asks how much of a proposal's dense score
  is explained by these topics, so a proposal that only restates them is recognised;
- a query whose proposal follows the topics is clustered along the topics themselves (the latents
  whose shares follow the documents' similarity to each topic's centre,
  :func:`saeembed.analysis.facets.select_facets`): their names are the categories, taken from the corpus.

No label, no LLM and no SAE is involved, so the topics are the same for every SAE a corpus is encoded
with. Computed once per corpus and process (a few seconds for thousands of documents).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..labels.ctfidf import distinctive_words
from ..memo import Memo

if TYPE_CHECKING:
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store

N_TOPICS = 8  # topics per corpus (more when more clusters are asked for); chosen on the evaluation's dev corpora
FIT_DOCS = 20000  # k-means is fitted on at most this many documents, then every document is assigned
NAME_WORDS = 2  # distinctive words in a topic's name

_MEMO: Memo[CorpusTopics] = Memo("corpus topics", max_entries=8)


@dataclass
class CorpusTopics:
    """The corpus' documents grouped by subject: ``labels`` [docs] (rows of ``store.embeddings``),
    ``centres`` [topics, dim] (unit-length MiniLM centres), ``names`` [topics] ("iraq/killed")."""

    labels: np.ndarray
    centres: np.ndarray
    names: list[str]

    def profile(self, emb: np.ndarray) -> np.ndarray:
        """[docs, topics]: each document's cosine similarity to every topic's centre, z-scored per topic,
        the dense score a topic clustering steers along (as a facet query's categories)."""
        sims = emb @ self.centres.T
        return (sims - sims.mean(axis=0)) / np.maximum(sims.std(axis=0), 1e-12)


def compute_topics(emb: np.ndarray, texts: list[str], n_topics: int, seed: int = 0) -> CorpusTopics:
    """k-means topics of the document embeddings ``emb`` (rows aligned with ``texts``)."""
    from sklearn.cluster import KMeans


    n_topics = max(1, min(n_topics, len(emb)))
    fit = emb
    if len(emb) > FIT_DOCS:
        fit = emb[np.sort(np.random.default_rng(seed).choice(len(emb), FIT_DOCS, replace=False))]
    km = KMeans(n_clusters=n_topics, n_init=4, random_state=seed).fit(fit)
    labels = km.predict(emb).astype(np.int64)
    centres = km.cluster_centers_.astype(np.float32)
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    words = distinctive_words(texts, [np.flatnonzero(labels == t) for t in range(n_topics)], NAME_WORDS)
    names = [w.replace(", ", "/") or f"topic {t}" for t, w in enumerate(words)]
    return CorpusTopics(labels, centres, names)


def corpus_topics(store: Store, info: CorpusInfo, doc_ids: np.ndarray, emb: np.ndarray,
                  n_topics: int = N_TOPICS) -> CorpusTopics:
    """The topics of the corpus ``info`` whose documents ``doc_ids`` have the MiniLM embeddings ``emb``
    (from :func:`~saeembed.analysis.dense.aligned_doc_embeddings`); built once per process."""
    key = (str(store.path), info.corpus_id, info.n_docs, str(info.created_at), n_topics)

    def build() -> CorpusTopics:
        docs = store.sql("SELECT doc_id, text FROM documents WHERE corpus_id = ?", [info.corpus_id])
        texts = dict(zip(docs["doc_id"].to_list(), docs["text"].to_list()))
        return compute_topics(emb, [str(texts.get(int(d)) or "") for d in doc_ids], n_topics)

    return _MEMO.get_or_build(key, build)


__all__ = ["CorpusTopics", "compute_topics", "corpus_topics", "N_TOPICS"]
