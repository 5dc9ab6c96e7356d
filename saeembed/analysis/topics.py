"""A corpus' own topics: groups of its documents by what they are about, named by their distinctive words.

Why: a query such as "topic", "genre" or "news category" asks for the corpus' own categories, which no
reader knows in advance (the shipped reader answers "topic" with "sports, games, movies, tv" whatever
the corpus holds). The corpus itself says what its topics are: k-means on the documents' MiniLM
embeddings (the same embeddings descriptors and dense search use) groups them by subject, and the
words most distinctive of each group (document-level c-TF-IDF,
:func:`~saeembed.labels.ctfidf.distinctive_words`) name it. Two uses:

- the grounding check (:mod:`saeembed.analysis.grounding`) asks how much of a proposal's dense score
  is explained by these topics, so a proposal that only restates them is recognised;
- a query whose proposal follows the topics is clustered along the topics themselves
  (:func:`topic_latents`): the latents whose shares go most with membership of a topic, a
  cross-fitted ridge regression of the topics on them, and k-means on each document's predicted
  topics; the topics' names are the categories, taken from the corpus, and the clusters are described
  by their latents like any other.

No label, no LLM and no SAE is involved in the topics themselves, so they are the same for every SAE a
corpus is encoded with. Computed once per corpus, topic count and process (a few seconds for thousands
of documents).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg

from ..errors import UserError
from ..labels.ctfidf import distinctive_words
from ..memo import Memo
from .score_latents import latent_score_correlations

if TYPE_CHECKING:
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store

N_TOPICS = 8  # topics per corpus for the grounding check, and for a topic clustering whose k is not given
TOPIC_LATENTS = 1000  # latents a topic clustering reads: those whose shares go with any topic's membership most
RIDGE = 1.0  # ridge penalty relative to the latents' mean variance (the three constants: the dev corpora)
FOLDS = 5  # a document's coordinates come from weights fitted on the other folds' documents
GRAM_BLOCK = 4096  # documents densified at a time while the latents' Gram matrices are summed
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


@dataclass
class TopicLatents:
    """How a topic clustering reads the SAE: ``feature_ids`` [n] (most associated with a topic first),
    ``association`` [n, topics] (correlation of each latent's share with each topic's membership) and
    each document's ``coordinates`` [docs, topics] (its topics as its latents predict them)."""

    feature_ids: np.ndarray
    association: np.ndarray
    coordinates: np.ndarray


def topic_latents(shares: Any, labels: np.ndarray, n: int = TOPIC_LATENTS, penalty: float = RIDGE,
                  folds: int = FOLDS, seed: int = 0) -> TopicLatents:
    """The ``n`` latents whose square-rooted shares (CSR [docs, d_sae], :func:`~.axis.axis_matrix`) go
    most with membership of any of the topics ``labels`` [docs], and every document's coordinates along
    the topics read from them alone.

    Why a fitted map and not one weight per latent: the latents of a subject overlap and fire sparsely,
    so a projection weighted by each latent's own correlation with a topic (what facets do) is noisy,
    and on the evaluation's dev corpora clustering it kept about half of what the topics separate. A
    ridge regression of the topics' membership on the standardised shares weighs the latents jointly.
    Why cross-fitted: the weights that place a document are fitted on the other folds' documents only,
    so its coordinates come from what its own latents say, not from a fit that memorised its topic (an
    in-sample fit reproduces the dense topics almost exactly, i.e. it would be the MiniLM clustering
    under another name). Costs a few [n × n] solves: well under a second for thousands of documents.
    """
    labels = np.asarray(labels)
    n_docs, n_topics = len(labels), int(labels.max()) + 1
    member = (labels[:, None] == np.arange(n_topics)[None, :]).astype(np.float64)
    corr, mean, std = latent_score_correlations(shares.tocsc(), member)
    strength = np.abs(corr).max(axis=1)
    best = np.argsort(-strength, kind="stable")[:n]
    best = best[strength[best] > 0]
    if len(best) == 0:
        raise UserError("no latent of this corpus varies with its topics; use --select labels")
    x = shares[:, best].tocsr()
    mu, sd = mean[best], np.maximum(std[best], 1e-12)
    folds = max(1, min(folds, n_docs // 2))
    fold_of = np.zeros(n_docs, np.int64)
    fold_of[np.random.default_rng(seed).permutation(n_docs)] = np.arange(n_docs) % folds
    # per fold: the raw Gram matrix XᵀX, column sums Xᵀ1 and Xᵀ(membership) of its documents, dense
    # blocks of documents at a time (BLAS; memory bounded by the block)
    grams = np.zeros((folds, len(best), len(best)))
    sums = np.zeros((folds, len(best)))
    cross = np.zeros((folds, len(best), n_topics))
    for start in range(0, n_docs, GRAM_BLOCK):
        block = x[start:start + GRAM_BLOCK].toarray()
        for f in np.unique(fold_of[start:start + GRAM_BLOCK]):
            rows = fold_of[start:start + GRAM_BLOCK] == f
            b = block[rows]
            grams[f] += b.T @ b
            sums[f] += b.sum(axis=0)
            cross[f] += b.T @ member[start:start + GRAM_BLOCK][rows]
    counts = np.bincount(fold_of, minlength=folds)
    member_sums = np.stack([member[fold_of == f].sum(axis=0) for f in range(folds)])
    coords = np.zeros((n_docs, n_topics))
    for f in range(folds):
        out = np.arange(folds) != f if folds > 1 else np.ones(1, bool)
        nf = int(counts[out].sum())
        g, s, c = grams[out].sum(axis=0), sums[out].sum(axis=0), cross[out].sum(axis=0)
        ys = member_sums[out].sum(axis=0)
        # the fitting documents' standardised (X − μ)ᵀ(X − μ) and (X − μ)ᵀ(y − ȳ), from the sums above
        zz = (g - np.outer(mu, s) - np.outer(s, mu) + nf * np.outer(mu, mu)) / np.outer(sd, sd)
        zy = (c - np.outer(s, ys) / nf) / sd[:, None]
        lam = penalty * np.trace(zz) / max(nf, 1)
        w = scipy.linalg.solve(zz + lam * np.eye(len(best)), zy, assume_a="pos") / sd[:, None]
        test = np.flatnonzero(fold_of == f)
        coords[test] = np.asarray(x[test] @ w) - mu @ w
    return TopicLatents(best.astype(np.int64), corr[best], coords)


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


__all__ = ["CorpusTopics", "TopicLatents", "compute_topics", "corpus_topics", "topic_latents", "N_TOPICS",
           "TOPIC_LATENTS"]
