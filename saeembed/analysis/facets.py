"""Facet queries: cluster along a categorical property ("product category", "news category", "emotion").

Why a separate selection: a categorical query names a *dimension* whose values are what tell documents
apart ("books", "electronics", "kitchen"), while label matching finds the latents of the query's own
words ("product, products, this product"), which fire in every review. On the evaluation's Amazon
reviews label selection put 6 of the 100 latents that best separate the product domains among its 100,
and clustering on them followed the domain no better than clustering on all latents. A facet query
reaches the value latents the way an axis query reaches its poles' latents (:mod:`.axis`), with one
score per category instead of one per pole:

1. **Categories.** "Q: A, B, C" in the query names them. Otherwise the local reader's greedy answer
   to the few-shot pattern of axis queries (:func:`~.axis.reader_answer`, one short generation, cached
   on disk), under which a categorical query is answered with a list ("emotion: happy, sad, angry,
   jealous"), gives up to :data:`N_CATEGORIES` names. An endpoint LLM is asked for the list in chat.
   The reader's names are a guess, not the corpus' categories: before they steer, the grounding check
   (:mod:`.grounding`) decides whether they separate the corpus' documents, merely follow its topics
   (the corpus' own topics then steer, :mod:`.topics`) or neither (:mod:`.proposals`).
2. **A dense profile per document:** for each category, the MiniLM similarity of the document to the
   category name, and to "name query", each taken relative to the document's mean similarity over
   all categories (so a document that resembles every category word is not near any of them) and
   z-scored over the corpus.
3. **Latents that follow the profile.** The ``n`` latents whose square-rooted token share correlates
   most with any category's column. A document's coordinates are its standardised shares on them
   weighted by their correlations (one coordinate per category), and k-means on the L2-normalised
   coordinates gives the clusters.

Measured by the evaluation harness (token SAE, NMI with the property named, k = 2 / 4, held-out odd
rows; settings were fixed on the even rows; docs/evaluation.md): Amazon "product category" with the
product domain 0.51 / 0.56 (label selection 0.01 / 0.14, all latents 0.06 / 0.29); AG News "news
category" with the news category 0.38 / 0.43 (labels 0.01 / 0.05); GoEmotions "emotion" with the
sentiment group of the emotions 0.11 / 0.12 (labels 0.01 / 0.02). What it costs: a categorical query
about something other than the corpus' main topic follows that topic too (Amazon "emotion": product
domain 0.40 / 0.33, labels 0.07 / 0.17), because the documents' dense similarity to any list of words
is dominated by what they are about; ``--select labels`` is the escape. A list that holds the query
itself names a concept, not a property (:func:`names_a_value`), and the query stays a label query.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..embed import get_embedder
from ..errors import UserError
from .axis import ask_reader, reader_answer
from .clustering import eigengap_k
from .dense import aligned_doc_embeddings
from .score_latents import latent_score_correlations, standardised_projection

if TYPE_CHECKING:
    from ..llm import LLM
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store

N_CATEGORIES = 12  # categories kept: the names answered most often
MIN_CATEGORIES = 3  # fewer distinct names is no list: the query stays a label query
FACET_CHAT = ("List the categories that the property {query!r} of a text can take, like 'fruit: apple, banana, "
              "orange'. Answer with up to {n} short comma-separated categories on one line, or 'none' if the "
              "property is not a set of categories.")
_NAME = re.compile(r"^[a-z][a-z0-9' &/+#.-]{0,30}$")
_FACETS: dict[str, list[str] | None] = {}


@dataclass
class Facets:
    """The latents a facet query selected and how each document's coordinates are computed."""

    categories: list[str]
    feature_ids: np.ndarray  # int64 [n], strongest first (max |correlation| over the categories)
    correlation: np.ndarray  # float64 [n, len(categories)], signed
    mean: np.ndarray  # float64 [n], share mean of each latent over the corpus
    std: np.ndarray  # float64 [n], share standard deviation

    def coordinates(self, shares: Any) -> np.ndarray:
        """Each document's coordinates [docs, categories] from :func:`~.axis.axis_matrix`'s matrix."""
        return standardised_projection(shares, self.feature_ids, self.correlation, self.mean, self.std)


def explicit_facets(query: str | None) -> tuple[str, list[str]] | None:
    """"product category: books, dvd, kitchen" → ("product category", ["books", "dvd", "kitchen"]);
    None unless the query has one colon followed by at least two comma-separated names."""
    if not query or query.count(":") != 1:
        return None
    head, tail = (p.strip() for p in query.split(":"))
    names = list(dict.fromkeys(n.strip() for n in tail.split(",") if n.strip()))
    return (head, names) if head and len(names) >= 2 else None


def parse_category_answers(texts: list[str], n: int = N_CATEGORIES) -> list[str] | None:
    """The ``n`` names listed most often in the first lines of ``texts`` (ties: first listed first), or
    None when fewer than :data:`MIN_CATEGORIES` distinct names are listed (a bipolar answer "A vs B",
    'none' and prose list nothing)."""
    counts: Counter[str] = Counter()
    for text in texts:
        line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
        if re.search(r"\s(?:vs\.?|versus)\s", line, re.IGNORECASE):
            continue
        names = dict.fromkeys(p.strip().strip(".'\"").lower() for p in line.split(","))
        counts.update(x for x in names if _NAME.match(x) and x != "none")
    names = [name for name, _ in counts.most_common(n)]
    return names if len(names) >= MIN_CATEGORIES else None


def _head_noun(query: str) -> str:
    """"type of question" → "type", "news category" → "category": the word a noun phrase is about."""
    words = query.lower().split()
    return words[:words.index("of")][-1] if "of" in words[1:] else words[-1]


def _same_word(a: str, b: str) -> bool:
    """"dog" ~ "dogs", "gratitude" ~ "gratitudeful", "humor" ~ "humorism": one extends the other by
    at most three letters."""
    short, long = sorted((a, b), key=len)
    return len(short) >= 3 and long.startswith(short) and len(long) - len(short) <= 3


def names_a_value(query: str, categories: list[str]) -> bool:
    """True when the reader's list holds the query itself (or its head noun): it listed examples of a
    concept ("anger: anger, angry, mad"; "dogs: dog, cat, puppy"), not the values of a property
    ("emotion: happy, sad, angry"), so the query is a concept to select by label, not facets.

    Why: the reader answers nearly every noun with a list, and facets built from a concept's
    synonyms are taken relative to each other, which cancels the concept they share."""
    query = query.strip().lower()
    head = _head_noun(query)
    for name in categories:
        if name == query or any(_same_word(head, word) for word in name.split()):
            return True
    return False


def propose_facets(query: str, llm: LLM | None = None) -> list[str] | None:
    """The categories of ``query`` if it names a categorical property, else None (also when the answer
    lists the query itself: :func:`names_a_value`).

    ``llm``: an endpoint (asked in chat) or a local model (greedy few-shot continuation); default the
    shipped local reader. Answers are cached on disk by the LLM layer and in-process here."""
    def ask(model: LLM, query: str) -> list[str] | None:
        if model.continues_text:
            texts = [reader_answer(model, query)]
        else:
            texts = [model.complete([{"role": "user", "content": FACET_CHAT.format(query=query, n=N_CATEGORIES)}],
                                    max_tokens=96).text]
        categories = parse_category_answers(texts)
        return None if categories is None or names_a_value(query, categories) else categories

    return ask_reader(_FACETS, query, llm, ask)


def facet_phrases(categories: list[str], query: str | None) -> list[str]:
    """The texts :func:`facet_profile` embeds: every category name, and "name query"."""
    return list(categories) + ([f"{c} {query}" for c in categories] if query else [])


def facet_profile(emb: np.ndarray, categories: list[str], query: str | None,
                  vecs: np.ndarray | None = None) -> np.ndarray:
    """[docs, categories]: each document's relative MiniLM similarity to every category name (and to
    "name query"), z-scored over the corpus (see the module docstring). ``vecs``: the embeddings of
    :func:`facet_phrases`, when the caller embedded them with others."""
    phrases = facet_phrases(categories, query)
    if vecs is None:
        vecs = get_embedder().embed(phrases)
    vecs = np.asarray(vecs, dtype=np.float32)
    profile = np.zeros((len(emb), len(categories)))
    for start in range(0, len(phrases), len(categories)):
        sims = emb @ vecs[start:start + len(categories)].T
        sims = sims - sims.mean(axis=1, keepdims=True)
        profile += (sims - sims.mean(axis=0)) / np.maximum(sims.std(axis=0), 1e-12)
    return profile


def select_facets(store: Store, info: CorpusInfo, categories: list[str], query: str | None, n: int,
                  shares: Any, doc_ids: np.ndarray) -> Facets:
    """The ``n`` latents of the corpus that follow the categories' profile most (see the module docstring);
    ``shares``/``doc_ids``: :func:`~.axis.axis_matrix`."""
    profile = facet_profile(aligned_doc_embeddings(store, info, doc_ids), categories, query)
    corr, mean, std = latent_score_correlations(shares.tocsc(), profile)
    strength = np.abs(corr).max(axis=1)
    best = np.argsort(-strength, kind="stable")[:n]
    best = best[strength[best] > 0]
    if len(best) == 0:
        raise UserError(f"no latent of {info['name']!r} varies with the categories {', '.join(categories)}; "
                        "use --select labels")
    return Facets(list(categories), best.astype(np.int64), corr[best], mean[best], std[best])


def split_facets(coordinates: np.ndarray, k: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """(cluster, centrality, k) by k-means on the L2-normalised coordinates; ``k`` None: the eigengap
    of their cosine affinity. Centrality is the cosine to the cluster's centre, clusters are numbered
    by size (0 largest)."""
    from sklearn.cluster import KMeans

    norms = np.linalg.norm(coordinates, axis=1, keepdims=True)
    x = coordinates / np.maximum(norms, 1e-12)
    if k is None:
        k = eigengap_k(np.clip(x @ x.T, 0.0, None))
    k = max(1, min(k, len(np.unique(x.round(12), axis=0))))
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    sizes = np.bincount(labels, minlength=k)
    rank = np.empty(k, np.int64)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(k)
    clusters = rank[labels]
    centres = np.stack([x[clusters == c].mean(axis=0) for c in range(k)])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    return clusters, np.einsum("ij,ij->i", x, centres[clusters]), k


__all__ = ["Facets", "explicit_facets", "parse_category_answers", "names_a_value", "propose_facets", "facet_profile",
           "select_facets", "split_facets", "N_CATEGORIES", "MIN_CATEGORIES"]
