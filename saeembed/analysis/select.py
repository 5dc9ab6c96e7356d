"""Query → latents: the selection shared by ``cluster`` and ``search``.

Two ways to match a keyphrase to latents (``select``):

- ``labels`` (the paper): rank latents by the embedding similarity of their labels to the phrase
  and keep the top 100 per phrase, delegated to :func:`saeembed.labels.search_features` (MiniLM
  cosine plus a keyword boost, every label source searched), so ``saeembed features --search``
  shows exactly the latents an analysis will use. With the offline c-TF-IDF labels this matches
  the *words* a latent fires on: "sentiment" finds the latents of "positive, negative".
- ``descriptors``: rank latents by how well their corpus descriptor — the mean MiniLM embedding
  of the documents a latent fires on most, minus the corpus mean
  (:mod:`saeembed.analysis.descriptors`) — matches the phrase (dot product, after an offline
  pseudo-relevance expansion of the phrase toward its nearest descriptors), so the phrase is
  matched to what the latent's documents are about, in the corpus being analysed. Where the SAE
  has labels, their score is fused in (``z(descriptor) + 0.5 × z(label)``). Settings (100 top
  documents, feedback 0.5, label weight 0.5) were chosen on the evaluation's development tasks only.
- ``auto`` (default): descriptors when the corpus is large enough for them (``AUTO_MIN_DOCS``),
  labels otherwise.

Several comma-separated keyphrases select the union of their top latents (best score kept).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ..embed import get_embedder
from ..errors import UserError
from ..labels import search_features
from .common import feature_labels
from .descriptors import corpus_descriptors
from .options import PER_PHRASE

if TYPE_CHECKING:
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store
    from .descriptors import Descriptors

SELECT_METHODS = ("auto", "labels", "descriptors")
AUTO_MIN_DOCS = 50  # below this many documents a latent's top documents are too few to describe it


def split_phrases(query: str) -> list[str]:
    """Comma-separated keyphrases ("reasoning style, hedging") → ["reasoning style", "hedging"]."""
    phrases = [p.strip() for p in (query or "").split(",") if p.strip()]
    if not phrases:
        raise UserError("the query is empty; pass comma-separated keyphrases, e.g. 'reasoning style, hedging'")
    return phrases


def resolve_method(method: str, info: CorpusInfo | None) -> str:
    """``auto`` → ``descriptors`` for a corpus of at least ``AUTO_MIN_DOCS`` documents, else ``labels``."""
    if method not in SELECT_METHODS:
        raise UserError(f"unknown selection {method!r}; use one of {', '.join(SELECT_METHODS)}")
    if method == "auto":
        return "descriptors" if info is not None and int(info.n_docs) >= AUTO_MIN_DOCS else "labels"
    if method == "descriptors" and info is None:
        raise UserError("descriptor selection needs a corpus")
    return method


def select_features(store: Store, query: str, sae: str, k: int = PER_PHRASE,
                    alternative: str = "pass --features instead", method: str = "labels",
                    info: CorpusInfo | None = None) -> pl.DataFrame:
    """Latents matching any keyphrase of ``query``: the top ``k`` per phrase, united.

    ``method``: ``labels``, ``descriptors`` (needs ``info``, the corpus) or ``auto`` (see the module
    docstring). Columns: feature_id, label, phrase (the best-matching phrase), score, rank (0 = best
    overall, by score). With labels, raises a :class:`UserError` when no latent is labelled, since
    then nothing can match; ``alternative`` completes its message with what the caller offers instead.
    """
    if k <= 0:
        raise UserError("the number of latents per phrase must be positive")
    if resolve_method(method, info) == "descriptors":
        return _select_by_descriptors(store, query, info, k)

    parts = []
    for phrase in split_phrases(query):
        hits = search_features(store, phrase, k=k, sae=sae)
        parts.append(hits.select(pl.col("feature_id").cast(pl.Int32), "label", "score")
                     .with_columns(pl.lit(phrase).alias("phrase")))
    res = pl.concat(parts) if parts else pl.DataFrame()
    if res.height == 0:
        raise UserError(f"no latent of SAE {sae!r} can match {query!r}: it has no labels in this store; import or "
                        f"generate labels (saeembed labels import FILE, saeembed label CORPUS), or {alternative}")
    res = (res.sort("score", descending=True).unique("feature_id", keep="first", maintain_order=True)
           .with_columns(pl.int_range(0, pl.len()).alias("rank")))
    return res.select("feature_id", "label", "phrase", "score", "rank")


FEEDBACK = 0.5  # offline query expansion: weight of the mean of the query's nearest descriptors
FEEDBACK_TOP = 10  # ... over this many nearest descriptors (by cosine)
LABEL_WEIGHT = 0.5  # descriptor selection adds this × the z-scored label score (0: descriptors alone)


def descriptor_scores(desc: Descriptors, query_vec: np.ndarray, feedback: float | None = None) -> np.ndarray:
    """Score of every descriptor for one phrase embedding: ``descriptor · q'`` (not the cosine).

    Why the dot product: ``(mean of top documents − corpus mean) · q`` is how much more similar to the
    query the latent's documents are than the average document — a latent whose documents differ
    strongly from the corpus in the query's direction outranks one whose documents barely differ
    but point the same way (the cosine ranks those equal, and measured worse on the dev tasks).
    ``q'`` is the query expanded offline by pseudo-relevance feedback: ``q + feedback ×`` the mean
    unit descriptor of its ``FEEDBACK_TOP`` nearest descriptors, renormalised, which pulls the
    query toward how the corpus expresses it.
    """
    feedback = FEEDBACK if feedback is None else feedback
    unit = desc.unit
    q = query_vec.astype(np.float32)
    if feedback and len(desc.feature_ids):
        near = np.argsort(-(unit @ q), kind="stable")[:FEEDBACK_TOP]
        q = q + feedback * unit[near].mean(axis=0)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
    return (desc.vectors @ q).astype(np.float64)


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), 1e-12)


def _label_scores(store: Store, phrase: str, info: CorpusInfo, feature_ids: np.ndarray) -> np.ndarray | None:
    """:func:`~saeembed.labels.search_features` score of every latent in ``feature_ids`` (None when the
    SAE has no labels in this store)."""
    hits = search_features(store, phrase, k=int(info.d_sae), sae=info.sae)
    if hits.height == 0:
        return None
    full = np.full(int(info.d_sae), float(hits["score"].min()))
    full[hits["feature_id"].to_numpy().astype(np.int64)] = hits["score"].to_numpy()
    return full[feature_ids]


def _select_by_descriptors(store: Store, query: str, info: CorpusInfo, k: int,
                           label_weight: float | None = None) -> pl.DataFrame:
    """The top ``k`` latents per phrase by descriptor score (fused with the label score when the SAE
    has labels: ``z(descriptor score) + label_weight × z(label score)``, z = standardised over the
    corpus' latents, so neither scale dominates by accident), united (best score kept)."""
    label_weight = LABEL_WEIGHT if label_weight is None else label_weight
    desc = corpus_descriptors(store, info)
    if len(desc.feature_ids) == 0:
        raise UserError(f"no latent fires in enough documents of {info['name']!r} to describe it; use --select labels")
    phrases = split_phrases(query)
    qs = get_embedder().embed(phrases)
    parts = []
    for phrase, q in zip(phrases, qs):
        sims = descriptor_scores(desc, q)
        if label_weight:
            labels = _label_scores(store, phrase, info, desc.feature_ids)
            if labels is not None:
                sims = _z(sims) + label_weight * _z(labels)
        best = np.argsort(-sims, kind="stable")[:k]
        parts.append(pl.DataFrame({"feature_id": desc.feature_ids[best].astype(np.int32), "score": sims[best],
                                   "phrase": [phrase] * len(best)}))
    res = (pl.concat(parts).sort(["score", "feature_id"], descending=[True, False])
           .unique("feature_id", keep="first", maintain_order=True)
           .with_columns(pl.int_range(0, pl.len()).alias("rank")))
    labels = feature_labels(store, info.sae, res["feature_id"].to_list())
    res = res.join(labels.with_columns(pl.col("feature_id").cast(pl.Int32)), on="feature_id", how="left")
    return res.sort("rank").select("feature_id", "label", "phrase", "score", "rank")


EXPAND_PROMPT = ("A user searches a document collection for: {query!r}.\n"
                 "Write {n} short keyphrases (2-5 words each) naming properties, topics or wordings that documents "
                 "matching this search would have. Answer with the keyphrases only, separated by commas.")


def parse_keyphrases(text: str, n: int) -> list[str]:
    """Keyphrases from an LLM answer: quoted phrases first (small models answer in prose that quotes
    them), then the pieces between commas, semicolons and new lines, with list markers, quotes and
    numbering stripped; empty and over-long pieces and duplicates dropped; at most ``n``."""
    out: list[str] = []
    quoted = re.findall(r'"([^"\n]{2,60})"', text or "")
    for piece in quoted + re.split(r"[,;\n]", text or ""):
        p = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", piece).strip().strip("\"'`.").strip()
        if p and len(p) <= 60 and p.lower() not in {o.lower() for o in out}:
            out.append(p)
    return out[:n]


def expand_query(query: str, llm: Any, n: int = 8) -> str:
    """The query's own phrases plus up to ``n`` keyphrases an LLM proposes for it (the paper expands
    queries into 18 phrases), comma-joined for :func:`select_features`; the query alone when the
    answer has none."""
    phrases = split_phrases(query)
    answer = llm.complete([{"role": "user", "content": EXPAND_PROMPT.format(query=query, n=n)}],
                          max_tokens=160, temperature=0.0)
    known = {p.lower() for p in phrases}
    extra = [p for p in parse_keyphrases(answer.text, n) if p.lower() not in known]
    return ", ".join(phrases + extra)


def parse_feature_list(text: str, d_sae: int | None) -> list[int]:
    """"1,2,3" → [1, 2, 3], checked against the SAE's width."""
    try:
        feats = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UserError(f"--features must be comma-separated integers, not {text!r}") from None
    if not feats:
        raise UserError("--features is empty; pass latent ids like 12,845,3301")
    bad = [f for f in feats if f < 0 or (d_sae is not None and f >= d_sae)]
    if bad:
        raise UserError(f"latent {bad[0]} is outside 0..{(d_sae or 1) - 1}; check --features")
    return list(dict.fromkeys(feats))


__all__ = ["select_features", "expand_query", "parse_keyphrases", "split_phrases", "parse_feature_list",
           "resolve_method", "PER_PHRASE", "SELECT_METHODS", "AUTO_MIN_DOCS"]
