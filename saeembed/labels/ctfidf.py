"""Distinctive words of groups of documents (class-based TF-IDF, as BERTopic names its topics).

One implementation serves every place that names a group of documents by its words: corpus descriptors
(a latent's top documents), the offline labels of document-level SAEs (which have no token to name) and
the corpus topics cluster steering grounds its proposals in. Words come from scikit-learn's
``CountVectorizer`` with its English stop-word list, counted once per document (a word repeated in one
long document is not more distinctive than a word in many).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_WORD = re.compile(r"[a-z][a-z']{2,}")
MIN_Z = 2.0  # how far above its corpus-wide rate a word must be in a group to be distinctive of it


def _words(text: str) -> list[str]:
    """Lower-case words of 3+ letters, apostrophes kept inside (``don't``) and stripped at the ends."""
    words = (w.strip("'") for w in _WORD.findall(text.lower()))
    return [w for w in words if len(w) >= 3]


def distinctive_words(texts: Sequence[str], groups: Sequence[np.ndarray], n_words: int = 4) -> list[str]:
    """For each group (row indices into ``texts``), its ``n_words`` most distinctive words, comma-joined.

    Score = documents of the group containing the word × ``log(1 + N / df)``. A word is a candidate only
    where the group has it more often than chance: in two or more of its documents (one document is an
    anecdote, not what the group shares), and over-represented against the whole set at a one-sided
    binomial z ≥ ``MIN_Z``. Why the second test: the IDF factor only discounts a common word, so on short
    texts a word nearly every document carries (a corpus-wide hashtag, "@user") still outscored the
    group's own words and named every group alike. Ties break alphabetically, so every process names a
    group the same way.
    """
    from scipy import sparse
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    if not len(groups):
        return []
    vec = CountVectorizer(tokenizer=_words, lowercase=False, token_pattern=None, binary=True,
                          stop_words=sorted(ENGLISH_STOP_WORDS), dtype=np.float32)
    try:
        bow = vec.fit_transform([str(t or "") for t in texts]).tocsr()
    except ValueError:  # no word left in any text
        return [""] * len(groups)
    n = bow.shape[0]
    idf = np.log1p(n / np.maximum(np.asarray(bow.sum(axis=0)).ravel(), 1))
    ptr = np.concatenate([[0], np.cumsum([len(g) for g in groups])])
    member = sparse.csr_matrix((np.ones(int(ptr[-1]), np.float32), np.concatenate(groups).astype(np.int64), ptr),
                               shape=(len(groups), n))
    tf = (member @ bow).tocsr()
    words = vec.get_feature_names_out()
    rate = np.asarray(bow.sum(axis=0)).ravel() / max(n, 1)
    out = []
    for j in range(len(groups)):
        lo, hi = tf.indptr[j], tf.indptr[j + 1]
        cols, counts = tf.indices[lo:hi], tf.data[lo:hi]
        size, p = len(groups[j]), rate[cols]
        excess = counts - size * p
        keep = (counts >= 2) & (excess > 0) & (excess >= MIN_Z * np.sqrt(size * p * (1 - p)))
        cols, counts = cols[keep], counts[keep]
        best = cols[np.lexsort((cols, -(counts * idf[cols])))][:n_words]
        out.append(", ".join(words[best].tolist()))
    return out


__all__ = ["distinctive_words", "MIN_Z"]
