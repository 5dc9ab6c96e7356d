"""How ``cluster`` chooses its latents for a query, where its poles or categories come from, and why.

A query steers the clustering through a *proposal*: two poles (an axis, :mod:`.axis`) or a list of
categories (facets, :mod:`.facets`). Proposals have three sources, recorded in every output:

- ``query``: the user wrote them ("positive vs negative", "news category: world, sports, business");
- ``reader``: the shipped local reader answered the query with them ("sentiment" → positive vs
  negative, "emotion" → happy, sad, angry, jealous);
- ``corpus``: the corpus' own topics (:mod:`.topics`), for a query whose proposal only restates what
  the documents are about ("topic", "news category").

Every proposal passes the grounding check (:mod:`.grounding`) before it steers. A reader's proposal
that follows the corpus' topics (categories, or poles that do not separate the documents) is replaced
by the topics themselves (their names come from the corpus, not from the reader); one that separates
the corpus' documents steers; categories that do not are replaced by the corpus' topics (the query
asked for categories, these are the corpus' own); poles that do not are refused, and the query is
matched by label (or descriptor) as in the paper. A proposal the user wrote (or forced with
``--select axis|facets``) always steers, with the check's verdict recorded next to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UserError
from .axis import axis_matrix, explicit_poles, propose_poles
from .dense import aligned_doc_embeddings
from .facets import explicit_facets, propose_facets
from .grounding import check
from .select import resolve_method
from .topics import N_TOPICS, corpus_topics

if TYPE_CHECKING:
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store
    from .grounding import Grounding
    from .topics import CorpusTopics

STEERED = ("axis", "facets", "topics")  # selections that split documents along a proposal's scores
SOURCES = ("query", "reader", "corpus")


@dataclass
class Selection:
    """How ``cluster`` chooses its latents: ``method`` (axis, facets, topics, labels, descriptors, features
    or unfiltered); an axis' ``poles``, facets' ``categories`` (for topics: the topics' names); ``phrase``:
    the query an axis or facets were derived from, appended to their names in the dense score (None
    when the query was only the names); ``source``: where the poles or categories came from (query,
    reader, corpus); ``grounding``: one sentence on why they steer, or why the reader's were refused."""

    method: str
    poles: tuple[str, str] | None = None
    categories: list[str] | None = None
    phrase: str | None = None
    source: str | None = None
    grounding: str | None = None
    topics: CorpusTopics | None = None

    @property
    def detail(self) -> str | None:
        """"positive vs negative" or "books, dvd, kitchen": what the output's poles/facets columns show."""
        if self.poles:
            return " vs ".join(self.poles)
        return ", ".join(self.categories) if self.categories else None


class SteerData:
    """What steering and its check read of one corpus, each computed at most once per call: square-rooted
    token shares and doc ids (:func:`~.axis.axis_matrix`), MiniLM embeddings, the corpus' topics."""

    def __init__(self, store: Store, info: CorpusInfo) -> None:
        self.store, self.info = store, info

    @cached_property
    def matrix(self) -> tuple[Any, np.ndarray]:
        return axis_matrix(self.store, self.info.name)

    @property
    def shares(self) -> Any:
        return self.matrix[0]

    @property
    def doc_ids(self) -> np.ndarray:
        return self.matrix[1]

    @cached_property
    def emb(self) -> np.ndarray:
        return aligned_doc_embeddings(self.store, self.info, self.doc_ids)

    def topics(self, n_topics: int | None = None) -> CorpusTopics:
        """The corpus' ``n_topics`` topics (default :data:`~.topics.N_TOPICS`, what the check reads)."""
        return corpus_topics(self.store, self.info, self.doc_ids, self.emb, n_topics or N_TOPICS)

    def check(self, proposal: tuple[str, str] | list[str], phrase: str | None) -> Grounding:
        key = (str(self.store.path), self.info.corpus_id, self.info.n_docs, str(self.info.created_at))
        return check(self.shares, self.emb, self.topics().labels, proposal, phrase, corpus_key=key)


def _names(proposal: tuple[str, str] | list[str]) -> str:
    return " vs ".join(proposal) if isinstance(proposal, tuple) else ", ".join(proposal)


def _what(proposal: tuple[str, str] | list[str]) -> str:
    return "poles" if isinstance(proposal, tuple) else "categories"


def topics_selection(data: SteerData, k: int | None, phrase: str | None, why: str) -> Selection:
    """Cluster along the corpus' own topics, ``k`` of them (:data:`~.topics.N_TOPICS` when ``k`` is not
    given; the clusters then follow from their eigengap); ``why``: the grounding sentence.

    Why as many topics as clusters: with more topics than clusters, k-means has to merge topics again,
    and on the evaluation's dev corpora the merged groups followed the labelled categories less than
    topics fitted at ``k`` did."""
    topics = data.topics(k)
    return Selection("topics", categories=list(topics.names), phrase=phrase, source="corpus", grounding=why,
                     topics=topics)


def _written(data: SteerData, proposal: tuple[str, str] | list[str], phrase: str | None,
             source: str) -> Selection:
    """A proposal that steers whatever the check says (written by the user, or forced with --select):
    the verdict is recorded."""
    g = data.check(proposal, phrase)
    who = "the query" if source == "query" else f"the reader for {phrase!r}"
    why = f"{_what(proposal)} from {who}, kept as asked; they {g.describe()}"
    if isinstance(proposal, tuple):
        return Selection("axis", poles=proposal, phrase=phrase, source=source, grounding=why)
    return Selection("facets", categories=list(proposal), phrase=phrase, source=source, grounding=why)


def cluster_selection(store: Store, info: CorpusInfo, method: str, query: str | None = None,
                      steer_ok: bool = True, data: SteerData | None = None, k: int | None = None) -> Selection:
    """The selection ``cluster`` uses for ``query`` (see the module docstring).

    ``auto``: poles ("A vs B") or categories ("Q: A, B, C") written in the query steer as written.
    Otherwise the local reader is asked (:func:`~.axis.propose_poles`, :func:`~.facets.propose_facets`)
    and its answer is checked (:mod:`.grounding`): it steers when it separates the documents, the
    corpus' topics steer when it only follows them, and it is refused otherwise. Without a steering
    proposal: ``labels`` when any latent of the corpus' SAE is labelled in this store, else the usual
    rule (descriptors for corpora of 50+ documents). ``steer_ok`` False (HDBSCAN or --coverage asked
    for) keeps ``auto`` off proposals. A comma-separated query is the paper's list of keyphrases and
    always a label (or descriptor) query. ``axis`` / ``facets`` force the reader's proposal (checked,
    kept), ``topics`` the corpus' topics. ``k``: clusters asked for (topics: as many topics).

    Why facets and axes before labels: label matching finds the latents of a property's own words
    ("product", "sentiment"), which fire everywhere; on the evaluation corpora a checked proposal
    follows the property asked for several times more (:mod:`saeembed.evaluate.steering`). Why not
    descriptors: on a corpus whose main variation is its topic *every* query's best descriptors are
    topic latents and the clustering follows the topic whatever was asked.
    """
    data = data or SteerData(store, info)
    poles, named = explicit_poles(query), explicit_facets(query)
    if method == "topics":
        return topics_selection(data, k, query, "the corpus' own topics, as asked (--select topics)")
    if method == "axis" or (method == "auto" and poles is not None):
        source = "query" if poles is not None else "reader"
        if poles is None and query:
            poles = propose_poles(query)
        if poles is None:
            raise UserError(f"{query!r} names no two opposite ends; write them as 'A vs B' or use --select labels")
        return _written(data, poles, None if source == "query" else query, source)
    if method == "facets" or (method == "auto" and named is not None):
        categories = named[1] if named else (propose_facets(query) if query else None)
        if not categories:
            raise UserError(f"{query!r} names no categories; write them as 'QUERY: A, B, C' or use --select labels")
        return _written(data, categories, named[0] if named else query, "query" if named else "reader")
    if method != "auto":
        return Selection(resolve_method(method, info))
    fallback = _fallback(store, info, method)
    if not (query and steer_ok) or "," in query:
        return fallback
    try:
        proposal: tuple[str, str] | list[str] | None = propose_poles(query)
        if proposal is None:
            proposal = propose_facets(query)
    except UserError:  # no local model: the query is matched by label as before
        return fallback
    if proposal is None:
        fallback.grounding = (f"the reader named no poles or categories for {query!r}; selected by "
                              f"{fallback.method}")
        fallback.source = "reader"
        return fallback
    g = data.check(proposal, query)
    said = f"the reader's {_what(proposal)} for {query!r} ({_names(proposal)})"
    if g.verdict == "follows the topics":
        return topics_selection(data, k, query, f"{said} {g.describe()}; clustered along the corpus' own topics")
    if g.verdict == "separates":
        why = f"{said} {g.describe()}"
        if isinstance(proposal, tuple):
            return Selection("axis", poles=proposal, phrase=query, source="reader", grounding=why)
        return Selection("facets", categories=list(proposal), phrase=query, source="reader", grounding=why)
    if not isinstance(proposal, tuple):
        return topics_selection(data, k, query, f"{said} refused: they {g.describe()}; clustered along the "
                                                "corpus' own topics instead")
    fallback.source = "reader"
    fallback.grounding = f"{said} refused: they {g.describe()}; selected by {fallback.method}"
    return fallback


def _fallback(store: Store, info: CorpusInfo, method: str) -> Selection:
    """Labels when the corpus' SAE has any in this store, else the descriptor rule."""
    labelled = store.con.execute("SELECT 1 FROM features WHERE sae = ? AND label IS NOT NULL LIMIT 1",
                                 [info.sae]).fetchall()
    return Selection("labels" if labelled else resolve_method(method, info))


def selected_by(selection: str | None, detail: str | None = None, source: str | None = None) -> str:
    """" selected by labels" (or " along the axis positive vs negative (from the reader)", " along the
    corpus' topics iraq/killed, oil/prices") for the headers of a query's clustering; empty for
    --features / --unfiltered."""
    came = f" (from the {source})" if source in ("query", "reader") else ""
    if selection == "axis":
        return f" along the axis {detail}{came}" if detail else " along an axis"
    if selection == "facets":
        return f" along the facets {detail}{came}" if detail else " along facets"
    if selection == "topics":
        return f" along the corpus' topics {detail}" if detail else " along the corpus' topics"
    return f" selected by {selection}" if selection in ("labels", "descriptors") else ""


LENGTH_SHARE_WARN = 0.25  # a clustering this much of whose length variance lies between clusters is flagged


def cluster_medians(clusters: Any) -> dict[int, float] | None:
    """{cluster: median content tokens} of a :func:`~saeembed.analysis.cluster.cluster` result (a polars
    DataFrame), for :func:`cluster_header`; None for a frame without the column."""
    if "median_tokens" not in clusters.columns:
        return None
    return {int(c): float(m) for c, m in zip(clusters["cluster"], clusters["median_tokens"]) if m is not None}


def cluster_header(row: dict[str, Any], n_docs: int | None = None,
                   medians: dict[int, float] | None = None) -> list[str]:
    """The lines every face prints above a clustering (terminal, HTML report, browser): what it was split
    on, and, when a query proposed poles or categories, where they came from and why they steer (or why
    the reader's were refused), and how far the clusters differ in length. ``row``: any row of
    :func:`~saeembed.analysis.cluster.cluster`'s result; ``medians``: its clusters' median_tokens."""
    docs = f", {n_docs} documents" if n_docs is not None else ""
    how = selected_by(row.get("selection"), row.get("poles") or row.get("facets"), row.get("source"))
    lines = [f"{row['k']} clusters ({row['method']}) on {row['n_features']} latents{how}{docs}"]
    if row.get("grounding"):
        lines.append(f"why: {row['grounding']}")
    share = row.get("length_share")
    if share is not None:
        line = f"document length: {share:.0%} of the variance of log content tokens lies between the clusters"
        if medians:
            line += " (median tokens: " + ", ".join(f"cluster {c} {m:g}" for c, m in medians.items()) + ")"
        if share >= LENGTH_SHARE_WARN:
            line += ("; these clusters sort the documents largely by length, which max-pooled latents grow "
                     "with, not by what they say (a --query clusters along a concept)")
        lines.append(line)
    return lines


__all__ = ["Selection", "SteerData", "cluster_selection", "selected_by", "cluster_header", "cluster_medians",
           "topics_selection", "STEERED", "SOURCES"]
