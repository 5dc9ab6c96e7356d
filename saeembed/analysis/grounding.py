"""Is a proposal grounded in this corpus? The check every axis or facet proposal passes before it steers.

Why: poles and categories come from a query ("positive vs negative"), from the shipped 135M reader
(which answers "target" with "adult vs child" and "stance" with "sit, stand, walk, run") or from the
corpus itself (:mod:`saeembed.analysis.topics`). Axis and facet clustering *always* find latents that
correlate with the proposal's dense score and always return clusters, so a made-up proposal yields a
confident-looking clustering of nothing in particular. The check measures two things on the corpus:

1. **Held-out signal.** Latents are chosen on one half of the documents by their correlation with the
   proposal's dense score per document (the axis' pole score, the facets' profile) and their projection
   must predict that score on the other half (correlation, both ways round). It is measured on the
   score itself and on its part beyond the corpus' topics (the score minus its mean within each topic),
   the better of the two counting, and ranked among the same statistic for :data:`N_RANDOM` proposals of
   random words of the same shape (drawn from MiniLM's vocabulary, the query appended the same way). A
   proposal whose signal beats :data:`SEPARATES_RANK` of them **separates** the documents: a proposal of
   random words passes with probability of about 1 − :data:`SEPARATES_RANK` (a little more, since the
   better of two correlated statistics counts).
2. **Topic share.** The share of the score's variance explained by the corpus' topics (η²). At least
   :data:`TOPIC_SHARE` means the proposal **follows the topics**: the query asks what the documents are
   about ("topic", "news category"), and the corpus' own topics are better names for that than the
   reader's guesses. Poles that separate the documents are kept whatever their topic share: two ends
   are a direction the query asked for ("sentiment": positive vs negative), not names for the topics,
   and on a corpus whose topics carry sentiment (GoEmotions) the topics would drop that direction.

What :mod:`saeembed.analysis.proposals` does with the verdict: a proposal that follows the topics is
replaced by the topics; one that separates the documents steers; categories that do not are replaced
by the corpus' own topics (the query asked for categories, the corpus has these); poles that do not are
refused, and the query is matched by label. The thresholds were chosen on the evaluation's development
corpora only (:mod:`saeembed.evaluate.steering`; docs: Evaluation, query steering).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..embed import get_embedder
from ..fsutil import atomic_write
from ..labels.search import QUERY_STOP_WORDS
from ..memo import Memo
from ..paths import cache_path
from .axis import pole_phrases, pole_score
from .facets import facet_phrases, facet_profile
from .score_latents import latent_score_correlations, standardised_projection

N_RANDOM = 32  # random proposals of the same shape each proposal is ranked against
SEPARATES_RANK = 0.9  # held-out signal above this share of them: the proposal separates the documents
TOPIC_SHARE = 0.25  # at least this share of the proposal's score explained by the corpus' topics: it follows them
SIGNAL_LATENTS = 100  # latents chosen on one half to predict the other half's residual score
SEED = 0
NULL_FORMAT = 1  # bump when the statistics change, so figures cached on disk by an older rule are not read

VERDICTS = ("follows the topics", "separates", "does not separate")
_WORD = re.compile(r"[a-z]{4,12}")
_RANDOM: Memo[np.ndarray] = Memo("random proposal statistics", max_entries=32)
_WORDS: Memo[list[str]] = Memo("generic words", max_entries=1)


@dataclass
class Grounding:
    """The verdict on one proposal and the figures it rests on: ``signal`` (the better held-out
    correlation, see the module docstring), ``signal_rank`` (the share of random proposals with a lower
    one), ``topic_share`` (η² of the score on the corpus' topics)."""

    verdict: str
    signal: float
    signal_rank: float
    topic_share: float
    n_random: int
    kind: str  # "pairs" (poles) or "lists" (categories): what the random proposals were

    def describe(self) -> str:
        """One clause for the output: the verdict and the figures it rests on."""
        sig = f"held-out signal above {self.signal_rank:.0%} of {self.n_random} random word {self.kind}"
        top = f"{self.topic_share:.0%} of its score explained by the corpus' topics"
        if self.verdict == "follows the topics":
            return f"follow this corpus' topics ({top}; {sig})"
        if self.verdict == "separates":
            return f"separate this corpus' documents ({sig}; {top})"
        return f"do not separate this corpus' documents better than random words ({sig}; {top})"


def generic_words() -> list[str]:
    """Lower-case whole words of 4–12 letters from the embedder's vocabulary, stop words removed: the
    corpus-independent vocabulary random proposals are drawn from."""
    def build() -> list[str]:
        vocab = get_embedder().vocabulary()
        return sorted(w for w in vocab if _WORD.fullmatch(w) and w not in QUERY_STOP_WORDS)

    return _WORDS.get_or_build("default", build)


def proposal_phrases(proposal: tuple[str, str] | Sequence[str], phrase: str | None) -> list[str]:
    """The texts :func:`proposal_profile` embeds."""
    if isinstance(proposal, tuple):
        return pole_phrases(proposal, phrase)
    return facet_phrases(list(proposal), phrase)


def proposal_profile(emb: np.ndarray, proposal: tuple[str, str] | Sequence[str], phrase: str | None,
                     vecs: np.ndarray | None = None) -> np.ndarray:
    """[docs, m]: the dense score an axis (``proposal`` a pair of poles, m = 1) or facets (a list of
    categories, m = len) steer along (:func:`~.axis.pole_score`, :func:`~.facets.facet_profile`);
    ``vecs``: the embeddings of :func:`proposal_phrases`, when already embedded."""
    if isinstance(proposal, tuple):
        return pole_score(emb, proposal, phrase, vecs).reshape(-1, 1)
    return facet_profile(emb, list(proposal), phrase, vecs)


def within_topic_residual(profile: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``profile`` minus its mean within each topic: what it says beyond what the documents are about."""
    out = np.array(profile, dtype=np.float64, copy=True).reshape(len(profile), -1)
    for t in np.unique(labels):
        rows = labels == t
        out[rows] -= out[rows].mean(axis=0)
    return out


def topic_share(profile: np.ndarray, labels: np.ndarray) -> float:
    """η²: the share of the profile's variance (mean over its columns) explained by the topic labels."""
    x = np.asarray(profile, dtype=np.float64).reshape(len(profile), -1)
    resid = within_topic_residual(x, labels)
    total = ((x - x.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1.0 - (resid ** 2).sum(axis=0) / np.maximum(total, 1e-12)))


def heldout_signal(shares: Any, score: np.ndarray, n: int = SIGNAL_LATENTS, seed: int = SEED) -> float:
    """How well latents chosen on one half of the documents predict ``score`` [docs, m] on the other:
    the ``n`` latents whose shares correlate most with a column on the first half, their standardised
    projection on the second, its correlation with that half's scores; mean over columns and both halves."""
    return heldout_signals(shares, [score], n, seed)[0]


def heldout_signals(shares: Any, scores: Sequence[np.ndarray], n: int = SIGNAL_LATENTS, seed: int = SEED
                    ) -> list[float]:
    """:func:`heldout_signal` of each of ``scores``, computed together.

    Why together: the random null ranks a proposal against 2 × :data:`N_RANDOM` scores on the same
    documents; splitting the matrix into halves, their latent statistics and the sparse product with
    the scores are then paid once per half instead of once per score."""
    cols = [np.asarray(s, dtype=np.float64).reshape(shares.shape[0], -1) for s in scores]
    bounds = np.cumsum([0] + [c.shape[1] for c in cols])
    every = np.hstack(cols)
    order = np.random.default_rng(seed).permutation(shares.shape[0])
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    found: list[list[float]] = [[] for _ in cols]
    for fit, test in (halves, halves[::-1]):
        corr, mean, std = latent_score_correlations(shares[fit].tocsc(), every[fit])
        test_rows = shares[test]
        for i in range(len(cols)):
            c = corr[:, bounds[i]:bounds[i + 1]]
            strength = np.abs(c).max(axis=1)
            best = np.argsort(-strength, kind="stable")[:n]
            best = best[strength[best] > 0]
            if len(best) == 0 or len(test) < 3:
                continue
            coords = standardised_projection(test_rows, best, c[best], mean[best], std[best])
            coords = np.asarray(coords).reshape(len(test), -1)
            for j in range(cols[i].shape[1]):
                a, b = coords[:, j], cols[i][test, j]
                if a.std() > 0 and b.std() > 0:
                    found[i].append(float(np.corrcoef(a, b)[0, 1]))
    return [float(np.mean(f)) if f else 0.0 for f in found]


def _statistics(shares: Any, emb: np.ndarray, labels: np.ndarray, proposal: tuple[str, str] | Sequence[str],
                phrase: str | None) -> tuple[float, float, float]:
    """(held-out signal of the score, of its part beyond the topics, topic share)."""
    return tuple(_statistics_of_many(shares, emb, labels, [proposal], phrase)[0])


def _statistics_of_many(shares: Any, emb: np.ndarray, labels: np.ndarray,
                        proposals: Sequence[tuple[str, str] | Sequence[str]], phrase: str | None) -> np.ndarray:
    """[len(proposals), 3]: :func:`_statistics` of each proposal, the held-out signals computed together."""
    # every proposal's phrases in one embedding call: the null's 32 proposals would otherwise embed a few
    # phrases at a time, one text after another (7 s of the 8 s a null cost)
    phrases = [proposal_phrases(p, phrase) for p in proposals]
    flat = [t for ts in phrases for t in ts]
    vecs = get_embedder().embed(flat) if flat else np.zeros((0, 384), np.float32)
    starts = np.cumsum([0] + [len(ts) for ts in phrases])
    profiles = [proposal_profile(emb, p, phrase, vecs[starts[i]:starts[i + 1]]) for i, p in enumerate(proposals)]
    signals = heldout_signals(shares, profiles + [within_topic_residual(p, labels) for p in profiles])
    k = len(profiles)
    return np.array([(signals[i], signals[k + i], topic_share(profiles[i], labels)) for i in range(k)])


def random_proposals(size: int, poles: bool, n: int = N_RANDOM, seed: int = SEED
                     ) -> list[tuple[str, str] | list[str]]:
    """``n`` proposals of random generic words: pairs of poles (tuples) when ``poles``, else lists of
    ``size`` categories; seeded, so every run ranks against the same ones."""
    rng = np.random.default_rng(seed)
    words = generic_words()
    picks = [[str(w) for w in rng.choice(words, 2 if poles else size, replace=False)] for _ in range(n)]
    return [(p[0], p[1]) for p in picks] if poles else picks


def null_key(shares: Any, emb: np.ndarray, labels: np.ndarray, poles: bool, size: int, phrase: str | None) -> str:
    """A digest of everything the random proposals' figures depend on: the corpus' shares, embeddings
    and topic labels (their bytes, so a re-encoded corpus under the same name gets its own), the shape
    of the proposal and its phrase, the embedder, and the rule's constants (:data:`N_RANDOM`,
    :data:`SEED`, :data:`SIGNAL_LATENTS`, :data:`NULL_FORMAT`)."""
    h = hashlib.blake2b(digest_size=20)
    csr = shares.tocsr()
    head = (NULL_FORMAT, N_RANDOM, SEED, SIGNAL_LATENTS, get_embedder().name, poles, size, phrase, csr.shape)
    h.update(repr(head).encode())
    for part in (csr.indptr, csr.indices, csr.data, emb, labels):
        arr = np.ascontiguousarray(part)
        h.update(repr((arr.dtype.str, arr.shape)).encode())
        h.update(arr.data)
    return h.hexdigest()


def null_path(key: str) -> Path:
    """Where the random proposals' figures for :func:`null_key` ``key`` are kept between processes."""
    return cache_path("grounding", f"null-{key}.npy")


def _read_null(path: Path) -> np.ndarray | None:
    """The cached figures, or None when absent or unreadable (then they are computed again)."""
    try:
        null = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return null if null.ndim == 2 and null.shape == (N_RANDOM, 3) else None


def _write_null(path: Path, null: np.ndarray) -> None:
    """Keep the figures on disk; a cache folder that cannot be written only costs the next process the time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: np.save(fh, null, allow_pickle=False))
    except OSError:
        pass


def random_null(shares: Any, emb: np.ndarray, labels: np.ndarray, poles: bool, size: int,
                phrase: str | None, corpus_key: Any = None) -> np.ndarray:
    """[N_RANDOM, 3]: :func:`_statistics` of the random proposals a proposal is ranked against.

    Why cached twice: the figures cost about a second per corpus, shape and phrase, every CLI call
    would pay them again, and they depend only on the inputs :func:`null_key` digests. Kept in memory
    per ``corpus_key`` (None: not in memory) and on disk under the cache root
    (:func:`~saeembed.paths.cache_root`) by that digest, written atomically."""
    def from_disk_or_build() -> np.ndarray:
        path = null_path(null_key(shares, emb, labels, poles, size, phrase))
        null = _read_null(path)
        if null is None:
            null = _statistics_of_many(shares, emb, labels, random_proposals(size, poles), phrase)
            _write_null(path, null)
        return null

    if corpus_key is None:
        return from_disk_or_build()
    return _RANDOM.get_or_build((corpus_key, poles, size, phrase), from_disk_or_build)


def check(shares: Any, emb: np.ndarray, labels: np.ndarray, proposal: tuple[str, str] | Sequence[str],
          phrase: str | None, corpus_key: Any = None) -> Grounding:
    """The verdict on ``proposal`` (poles as a tuple, or categories) for the corpus whose documents have
    square-rooted token shares ``shares`` (CSR, :func:`~.axis.axis_matrix`), MiniLM embeddings ``emb``
    and topic ``labels`` (:mod:`.topics`); see the module docstring. The random proposals' figures are
    computed once per corpus, shape and phrase (:func:`random_null`; ``corpus_key`` identifies the
    corpus within the process)."""
    poles = isinstance(proposal, tuple)
    plain, beyond, share = _statistics(shares, emb, labels, proposal, phrase)
    null = random_null(shares, emb, labels, poles, len(proposal), phrase, corpus_key)
    ranks = (float(np.mean(null[:, 0] < plain)), float(np.mean(null[:, 1] < beyond)))
    best = int(np.argmax(ranks))
    separates = ranks[best] >= SEPARATES_RANK
    verdict = ("separates" if poles and separates else "follows the topics" if share >= TOPIC_SHARE else
               "separates" if separates else "does not separate")
    return Grounding(verdict, (plain, beyond)[best], ranks[best], share, len(null), "pairs" if poles else "lists")


__all__ = ["Grounding", "check", "heldout_signal", "topic_share", "within_topic_residual", "proposal_profile",
           "random_proposals", "random_null", "null_key", "null_path", "generic_words",
           "N_RANDOM", "SEPARATES_RANK", "TOPIC_SHARE", "VERDICTS"]
