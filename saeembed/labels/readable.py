"""Readable offline label candidates, written from a latent's strongest contexts (no LLM).

Token lists such as ``"chrom osphere, singular ities"`` name the subword pieces a latent fires on,
not what a reader would call it. Three kinds of candidate read better; each is kept only where it
scores better than the label it would replace (:mod:`.score`, chosen on the held-out ``select``
half, reported on the ``score`` half):

- ``phrase``: the word n-gram around the firing token that most of the strongest contexts share,
  decoded as text (``"sure, here are"``, ``"menopause"``);
- ``words``: the corpus words whose MiniLM embedding is nearest to the direction that separates the
  latent's strongest windows from random windows (``"insane, ridiculous, stupid"`` for a latent of
  strong evaluative adjectives whose tokens share no word);
- ``docwords``: the words most distinctive of the documents those contexts come from
  (document-level c-TF-IDF, as corpus descriptors use), for latents of a topic or a genre.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

import numpy as np
import polars as pl

from .contexts import Contexts
from .ctfidf import distinctive_words
from .score import embed_texts
from .search import QUERY_STOP_WORDS

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|[^\w\s]")
_WORD = re.compile(r"[a-z][a-z'-]{2,}")
PHRASE_MIN_SHARE = 0.25  # a phrase must occur in at least this share of the strongest contexts
N_PHRASES = 2
N_WORDS = 3


def _span_words(ctx: Contexts, row: int) -> tuple[list[str], int] | None:
    """Words (and punctuation) of the window around ``row`` and the index of the word holding the token."""
    tok, doc = ctx.codes.tok, ctx.codes.doc
    lo = row
    while lo > 0 and row - lo < 6 and doc[lo - 1] == doc[row]:
        lo -= 1
    hi = row
    while hi + 1 < len(tok) and hi - row < 2 and doc[hi + 1] == doc[row]:
        hi += 1
    left, mid = ctx.decode(tok[lo:row].tolist()), ctx.decode([int(tok[row])])
    text = left + mid + ctx.decode(tok[row + 1:hi + 1].tolist())
    at = len(left) + len(mid) - len(mid.lstrip()) if mid.strip() else len(left)
    words, index = [], None
    for m in _TOKEN.finditer(text):
        if index is None and m.end() > at:
            index = len(words)
        words.append(m.group(0).lower())
    return (words, index) if index is not None and words else None


def phrase_candidates(ctx: Contexts, latent: int, n: int = N_PHRASES) -> list[str]:
    """The most shared word n-grams (1–3 words, holding the firing token's word) of the strongest
    contexts, longer ones first when they are as shared; none below ``PHRASE_MIN_SHARE``."""
    rows = ctx.explain.get(latent, np.zeros(0, np.int64))
    counts: Counter[tuple[str, ...]] = Counter()
    for row in rows:
        found = _span_words(ctx, int(row))
        if found is None:
            continue
        words, i = found
        grams = {tuple(words[a:a + k]) for k in (1, 2, 3) for a in range(i - k + 1, i + 1)
                 if a >= 0 and a + k <= len(words)}
        counts.update(g for g in grams if any(w[0].isalnum() for w in g))
    need = max(2, int(np.ceil(PHRASE_MIN_SHARE * len(rows))))
    # shared by enough contexts; among those, more shared first, then longer
    ranked = sorted((g for g, c in counts.items() if c >= need), key=lambda g: (-counts[g], -len(g), g))
    out: list[str] = []
    for g in ranked:
        text = re.sub(r" ([^\w\s])", r"\1", " ".join(g))  # "sure , here" -> "sure, here"
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out


def corpus_vocabulary(texts: Sequence[str], min_docs: int = 3, max_words: int = 12000) -> list[str]:
    """Words (3+ letters, not stop words) in at least ``min_docs`` of ``texts``, most frequent first."""
    df: Counter[str] = Counter()
    for t in texts:
        df.update({w.strip("'-") for w in _WORD.findall(str(t).lower())})
    return [w for w, c in df.most_common() if c >= min_docs and len(w) >= 3 and w not in QUERY_STOP_WORDS][:max_words]


def word_candidates(directions: np.ndarray, vocab: list[str], vocab_vecs: np.ndarray, n: int = N_WORDS
                    ) -> list[list[str]]:
    """Per row of ``directions`` (unit-free): the ``n`` vocabulary words most aligned with it."""
    out = []
    for start in range(0, len(directions), 512):
        sims = directions[start:start + 512] @ vocab_vecs.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :n]
        out.extend([[vocab[int(i)] for i in row] for row in top])
    return out


def candidates(ctx: Contexts, windows: object, texts: Sequence[str], latents: Sequence[int]) -> pl.DataFrame:
    """Candidate labels (feature_id, label, label_source ``offline-phrase|words|docwords``) of ``latents``.

    ``windows``: a :class:`~saeembed.labels.score.WindowEmbeddings` holding the explain windows and
    the negatives; ``texts``: the documents the contexts were read from (the codes' ``doc`` indexes).
    """
    rows: list[tuple[int, str, str]] = []
    latents = [int(j) for j in latents if len(ctx.explain.get(int(j), ())) >= 2]
    for j in latents:
        rows += [(j, p, "offline-phrase") for p in phrase_candidates(ctx, j)]
    vocab = corpus_vocabulary(texts)
    if vocab and latents:
        neg_mean = windows.of(ctx.negatives).mean(axis=0)  # type: ignore[attr-defined]
        dirs = np.stack([windows.of(ctx.explain[j]).mean(axis=0) - neg_mean for j in latents])  # type: ignore[attr-defined]
        for j, words in zip(latents, word_candidates(dirs, vocab, embed_texts(vocab))):
            rows += [(j, ", ".join(words), "offline-words"), (j, words[0], "offline-words")]
    tops = [np.unique(ctx.codes.doc[ctx.explain[j]]) for j in latents]
    for j, words in zip(latents, distinctive_words(list(texts), tops, 3)):
        if words:
            rows.append((j, words, "offline-docwords"))
    return pl.DataFrame(rows, schema={"feature_id": pl.Int32, "label": pl.String, "label_source": pl.String},
                        orient="row")


__all__ = ["phrase_candidates", "word_candidates", "corpus_vocabulary", "candidates"]
