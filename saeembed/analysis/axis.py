"""Axis queries: cluster along a property with two opposite ends ("sentiment", "positive vs negative").

Why a separate selection: a query such as "sentiment" names a *dimension*, not a thing documents
contain. Label or descriptor matching finds latents about the word (or, through descriptors, about the
corpus' main topic), and clustering on them follows the topic whatever was asked. What separates
positive from negative reviews are latents of negation, "but", "poorly", "love", "perfect for" and
punctuation, whose names no query matches. An axis query reaches them in three steps, none of which
reads a label:

1. **Poles.** "A vs B" in the query names them. Otherwise the local reader (SmolLM2-135M-Instruct,
   shipped) is asked with a few-shot pattern (``temperature: hot vs cold`` …, plus categorical shots
   such as ``fruit: apple, banana, orange`` so that a categorical query answers with a list and stays
   a label query). An answer of the form "A vs B" makes the query an axis.
2. **A weak document score from the dense embedder:** ``z(MiniLM(d) · (e(A) − e(B)))`` plus the same
   with the query appended to each pole ("positive sentiment" − "negative sentiment"). On its own it
   barely separates reviews (NMI with sentiment ≈ 0.1).
3. **Latents correlated with that score.** The ``n`` latents whose *share* of the document's tokens
   (``store.embeddings(pooling="share")``: a whole-document property shows in how much of the text a
   latent fires on, which max-pooling loses; square-rooted, the usual variance-stabilising transform
   of a proportion) correlates most, in either direction, with the score.
   The documents' projection on those latents (correlation-weighted, standardised) is the axis, and the
   clusters are segments of it (1-D k-means), ordered from pole A to pole B.

Step 3 is where the SAE earns its place: the correlated latents pool evidence the dense score misses,
and the clustering along them is twice as aligned with sentiment as the score it started from.
Measured on the evaluation's Amazon reviews (token SAE, dev rows, k = 2 / 4): 0.21 / 0.22 NMI with
sentiment, domain NMI ≈ 0.01; settings (both phrasings, n = 100, 1-D k-means, square-rooted
shares) were chosen there among 3 phrasings × 4 widths × 3 partitions × 5 transforms of the shares;
docs/evaluation.md reports the held-out rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import polars as pl

from ..embed import get_embedder
from ..errors import UserError
from ..llm import make_llm
from ..memo import Memo
from .dense import aligned_doc_embeddings
from .score_latents import latent_score_correlations, standardised_projection

if TYPE_CHECKING:
    from ..llm import LLM
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store

# few-shot pattern for the local model: bipolar properties answer "A vs B", categorical ones a list
POLE_SHOTS = ("temperature: hot vs cold\nfruit: apple, banana, orange, grape\nspeed: fast vs slow\n"
              "color: red, green, blue, yellow\nformality: formal vs casual\nanimal: dog, cat, horse, bird\n")
POLE_CHAT = ("Does the property {query!r} of a text have two opposite ends (like 'speed: fast vs slow'), or is it a "
             "set of categories (like 'fruit: apple, banana, orange')? If it has two ends answer exactly 'A vs B' "
             "with the two ends; otherwise answer 'categories'.")
_VS = re.compile(r"\s+(?:vs\.?|versus)\s+", re.IGNORECASE)
_POLE = re.compile(r"^[A-Za-z][A-Za-z' -]{0,40}$")

_LOCAL: Memo[Any] = Memo("local pole model", max_entries=1)
_POLES: dict[str, tuple[str, str] | None] = {}


@dataclass
class Axis:
    """The latents an axis query selected and how each documents' position on the axis is computed."""

    poles: tuple[str, str]
    feature_ids: np.ndarray  # int64 [n], by |correlation|, strongest first
    correlation: np.ndarray  # float64 [n], signed: > 0 leans to poles[0]
    mean: np.ndarray  # float64 [n], share mean of each latent over the corpus
    std: np.ndarray  # float64 [n], share standard deviation

    def positions(self, shares: Any) -> np.ndarray:
        """Each document's position (higher: nearer poles[0]) from :func:`axis_matrix` [docs, d_sae] (CSR)."""
        return standardised_projection(shares, self.feature_ids, self.correlation, self.mean, self.std).ravel()

    def frame(self, labels: dict[int, str]) -> pl.DataFrame:
        return pl.DataFrame({"feature_id": self.feature_ids.astype(np.int32),
                             "label": [labels.get(int(f)) for f in self.feature_ids],
                             "phrase": [self.poles[0] if c > 0 else self.poles[1] for c in self.correlation],
                             "score": self.correlation, "rank": np.arange(len(self.feature_ids))})


def explicit_poles(query: str | None) -> tuple[str, str] | None:
    """"positive vs negative" → ("positive", "negative"); None when the query names no two poles."""
    parts = [p.strip().strip("'\"") for p in _VS.split(query or "")]
    if len(parts) != 2 or not all(parts) or "," in query:
        return None
    return parts[0], parts[1]


def parse_pole_answer(text: str) -> tuple[str, str] | None:
    """The poles in a model's first answer line ("positive vs negative"), or None when it lists
    categories, names more than two ends, repeats itself or answers something else."""
    line = (text or "").strip().splitlines()[0].strip().strip(".") if (text or "").strip() else ""
    parts = [p.strip().strip("'\"") for p in _VS.split(line)]
    if len(parts) != 2 or not all(_POLE.match(p) for p in parts) or parts[0].lower() == parts[1].lower():
        return None
    return parts[0].lower(), parts[1].lower()


def _local_llm() -> LLM:
    return _LOCAL.get_or_build("default", lambda: make_llm("local"))


def ask_reader(cache: dict[str, Any], query: str, llm: LLM | None, ask: Callable[[LLM, str], Any]) -> Any:
    """``ask(model, query)`` for a one-phrase query, cached in-process in ``cache`` per model and query;
    None for an empty query or a comma-separated list of keyphrases (never an axis or facets)."""
    query = query.strip()
    if "," in query or not query:
        return None
    key = f"{getattr(llm, 'name', 'local')}|{query.lower()}"
    if key not in cache:
        cache[key] = ask(llm or _local_llm(), query)
    return cache[key]


READER_TOKENS = 24  # the local reader's answer: one greedy line, enough for "A vs B" or a list of categories


def reader_answer(model: LLM, query: str) -> str:
    """The local reader's greedy continuation of the few-shot pattern for ``query`` (cached on disk by
    the LLM layer): one answer serves both :func:`propose_poles` and
    :func:`~saeembed.analysis.facets.propose_facets`, so a query costs one short generation."""
    return model.continue_text(POLE_SHOTS + f"{query}:", max_tokens=READER_TOKENS).text


def propose_poles(query: str, llm: LLM | None = None) -> tuple[str, str] | None:
    """The two opposite ends of ``query`` if it names a bipolar property, else None.

    ``llm``: an endpoint (asked in chat) or a local model (few-shot continuation); default the shipped
    local reader. Answers are cached on disk by the LLM layer and in-process here. Raises
    :class:`UserError` when no model can be loaded."""

    def ask(model: LLM, query: str) -> tuple[str, str] | None:
        if model.continues_text:
            return parse_pole_answer(reader_answer(model, query))
        text = model.complete([{"role": "user", "content": POLE_CHAT.format(query=query)}], max_tokens=24).text
        return parse_pole_answer(text)

    return ask_reader(_POLES, query, llm, ask)


def pole_phrases(poles: tuple[str, str], query: str | None) -> list[str]:
    """The texts :func:`pole_score` embeds, in pairs: A, B, and "A query", "B query"."""
    pairs = [poles] + ([(f"{poles[0]} {query}", f"{poles[1]} {query}")] if query else [])
    return [p for pair in pairs for p in pair]


def pole_score(emb: np.ndarray, poles: tuple[str, str], query: str | None,
               vecs: np.ndarray | None = None) -> np.ndarray:
    """The weak dense score of every document: z-scored projections of its MiniLM embedding on
    ``e(A) − e(B)``, plus on ``e(A query) − e(B query)`` when the poles came from a query. ``vecs``:
    the embeddings of :func:`pole_phrases`, when the caller embedded them with others."""
    phrases = pole_phrases(poles, query)
    if vecs is None:
        vecs = get_embedder().embed(phrases)
    vecs = np.asarray(vecs, dtype=np.float32)
    score = np.zeros(len(emb))
    for i in range(len(phrases) // 2):
        d = emb @ (vecs[2 * i] - vecs[2 * i + 1])
        score += (d - d.mean()) / max(float(d.std()), 1e-12)
    return score


def correlated_latents(shares: Any, score: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                         np.ndarray]:
    """The ``n`` latents whose shares correlate most (in absolute value) with ``score``, computed on the
    sparse matrix (never densified): ids, signed correlations, means, standard deviations."""
    corr, mean, std = latent_score_correlations(shares, score)
    corr = corr[:, 0]
    best = np.argsort(-np.abs(corr), kind="stable")[:n]
    best = best[np.abs(corr[best]) > 0]
    return best.astype(np.int64), corr[best], mean[best], std[best]


def axis_matrix(store: Store, corpus: str) -> tuple[Any, np.ndarray]:
    """The matrix an axis is measured on: square roots of the latents' token shares (CSR), and its doc ids."""
    shares, doc_ids = store.embeddings(corpus, pooling="share")
    return shares.sqrt().tocsr(), doc_ids


def select_axis(store: Store, info: CorpusInfo, poles: tuple[str, str], query: str | None, n: int,
                shares: Any | None = None, doc_ids: np.ndarray | None = None) -> Axis:
    """The axis of ``poles`` in the corpus: its ``n`` most correlated latents (see the module docstring).
    ``shares``/``doc_ids``: :func:`axis_matrix`, when the caller already has it."""
    if shares is None or doc_ids is None:
        shares, doc_ids = axis_matrix(store, info.name)
    emb = aligned_doc_embeddings(store, info, doc_ids)
    ids, corr, mean, std = correlated_latents(shares.tocsc(), pole_score(emb, poles, query), n)
    if len(ids) == 0:
        raise UserError(f"no latent of {info['name']!r} varies with {poles[0]!r} vs {poles[1]!r}; use --select labels")
    return Axis(poles, ids, corr, mean, std)


def split_axis(positions: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Segments of the axis by 1-D k-means: cluster 0 nearest poles[0], k − 1 nearest poles[1];
    centrality ``1 / (1 + |position − segment centre| / std)``."""
    from sklearn.cluster import KMeans

    x = positions.reshape(-1, 1)
    k = min(k, len(np.unique(positions)))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    order = np.argsort(-km.cluster_centers_.ravel())
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    clusters = rank[km.labels_]
    dist = np.abs(positions - km.cluster_centers_.ravel()[km.labels_])
    return clusters, 1.0 / (1.0 + dist / max(float(positions.std()), 1e-12))


__all__ = ["Axis", "axis_matrix", "explicit_poles", "parse_pole_answer", "propose_poles", "reader_answer", "pole_score",
           "correlated_latents", "select_axis", "split_axis"]
