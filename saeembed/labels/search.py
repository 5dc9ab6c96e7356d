"""Search latents by meaning: rank them by how well their labels match a free-text query.

``score = similarity + 0.2 × keyword_match``: MiniLM cosine similarity between the query and each
label finds paraphrases ("apologetic tone" ~ "saying sorry"); the keyword boost lifts labels that
literally name the query's words. Analyses select latents by concept through :func:`search_features`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ..embed import get_embedder
from ..errors import UserError
from ..fsutil import atomic_write
from ..labelrule import naming_labels, shown_labels
from ..memo import Memo
from ..paths import cache_path
from ..sae.shipped import LABELS_FILE, SHIPPED
from ..store.handle import reads_store
from .catalog import resolve_sae_id

if TYPE_CHECKING:
    from ..store.handle import Store

_EMBEDDINGS: Memo[np.ndarray] = Memo("label embeddings", max_entries=16)  # digest of the texts → rows

# words too common to count as a keyword match (also left out of word candidates and random word lists)
QUERY_STOP_WORDS = {"the", "and", "for", "with", "that", "this", "from", "are", "was", "about", "into", "its", "of",
                    "a", "an", "to", "in", "on", "or", "is", "be", "as", "by", "at", "it"}


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 3 and w not in QUERY_STOP_WORDS]


def embed_labels(labels: list[str]) -> np.ndarray:
    """MiniLM embeddings of label texts (one row per label), cached while the texts are unchanged.

    Why three levels: embedding the 6,144 labels of the default SAE takes tens of seconds on a
    CPU, and every CLI call is a new process. The memory cache serves repeated calls in one
    process; the disk cache (``label_embeddings/`` under the cache root) serves later processes;
    the package ships the default SAE's embeddings so even the first search is instant. All are
    keyed by a digest of the exact label texts, so edited labels are re-embedded.
    """
    digest = hashlib.sha1("\x00".join(labels).encode()).hexdigest()
    return _EMBEDDINGS.get_or_build(digest, lambda: _label_embeddings_on_disk(digest, labels))


_SHIPPED_VECTORS: Memo[dict[str, np.ndarray]] = Memo("shipped label vectors by text", max_entries=1)


def _shipped_vectors_by_text() -> dict[str, np.ndarray]:
    """label text → embedding, for every label whose embedding the package ships.

    The shipped files are keyed by the digest of a whole label list (one per SAE and source, in search
    order), so they serve only that exact list; this reads them per text, so any list of shipped label
    texts — a mix of sources, a shuffled null, a subset — reuses them."""
    out: dict[str, np.ndarray] = {}
    for folder in SHIPPED.values():
        if not (folder / LABELS_FILE).exists():
            continue
        rows = naming_labels(pl.read_parquet(folder / LABELS_FILE)).sort("label_source", "feature_id")
        for _, grp in rows.group_by("label_source", maintain_order=True):
            texts = grp["label"].to_list()
            path = folder / label_embedding_file(hashlib.sha1("\x00".join(texts).encode()).hexdigest())
            if path.exists():
                emb = np.load(path).astype(np.float32)
                if emb.shape[0] == len(texts):
                    out.update(zip(texts, emb))
    return out


def label_text_vectors(texts: list[str]) -> np.ndarray:
    """MiniLM embeddings of any list of label texts, at the precision label embeddings are cached at:
    texts the package ships an embedding of are looked up, the others embedded (each distinct text once)."""
    if not texts:
        return np.zeros((0, 384), np.float32)
    known = _SHIPPED_VECTORS.get_or_build("shipped", _shipped_vectors_by_text)
    uniq = sorted(set(texts) - known.keys())
    fresh = dict(zip(uniq, get_embedder().embed(uniq).astype(np.float16).astype(np.float32))) if uniq else {}
    return np.stack([known[t] if t in known else fresh[t] for t in texts])


def label_vectors(store: Store, sae: str) -> tuple[np.ndarray, np.ndarray]:
    """(feature ids, embeddings) of each latent's preferred label (:func:`saeembed.labelrule.shown_labels`
    among its labels: a latent's context names nothing, so it is not compared).

    Embedded per label source in the order label search reads them, so the embeddings search computed
    or the package ships serve here too (the preferred labels of a scored SAE mix sources, and a mix
    of 6,144 labels would be embedded afresh).
    """
    rows = _searched_labels(store, "WHERE sae = ?", [sae])
    if rows.height == 0:
        return np.zeros(0, np.int64), np.zeros((0, 384), np.float32)
    emb = np.concatenate([embed_labels(grp["label"].to_list())
                          for _, grp in rows.group_by("sae", "label_source", maintain_order=True)])
    shown = shown_labels(rows.select("feature_id", "label_source", "label_score").rename(
        {"label_score": "score"}).with_row_index("row"), contexts=False)
    return shown["feature_id"].to_numpy().astype(np.int64), emb[shown["row"].to_numpy()]


def _searched_labels(store: Store, where: str, params: list | None) -> pl.DataFrame:
    """The label rows search reads, in its order: by SAE, label source and latent; no context, none dead."""
    rows = store.sql(f"""SELECT sae, feature_id, label, label_source, score AS label_score, description FROM features
                         {where} ORDER BY sae, label_source, feature_id""", params)
    return naming_labels(rows)


def label_embedding_file(digest: str) -> str:
    return f"label_embeddings_{digest[:20]}.npy"


def _label_embeddings_on_disk(digest: str, labels: list[str]) -> np.ndarray:
    name = label_embedding_file(digest)
    for path in (*(d / name for d in SHIPPED.values()), cache_path("label_embeddings", name)):
        if path.exists():
            try:
                emb = np.load(path).astype(np.float32)
                if emb.shape[0] == len(labels):
                    return emb
            except (OSError, ValueError):
                pass  # a damaged cache file is recomputed below
    emb = get_embedder().embed(labels) if labels else np.zeros((0, 384), np.float32)
    emb = emb.astype(np.float16).astype(np.float32)  # the precision it is cached at, so every run agrees
    path = cache_path("label_embeddings", name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: np.save(fh, emb.astype(np.float16)))
    except OSError:
        pass  # a read-only home only costs recomputation
    return emb


def _keyword_matches(query_words: list[str], labels: pl.Series) -> np.ndarray:
    """``_keyword_match`` for every label, scoring only labels that contain a query word's stem.

    Why: a Python loop over 65k labels costs ~1 s per search; a label can only match a word whose
    stem it contains, so a vectorised substring prefilter leaves a handful to score exactly.
    """
    kw = np.zeros(len(labels))
    if not query_words:
        return kw
    low = labels.str.to_lowercase()
    hit = pl.select(pl.any_horizontal([low.str.contains(_word_stem(w), literal=True) for w in query_words]))
    for i in np.flatnonzero(hit.to_series().fill_null(False).to_numpy()):
        kw[i] = _keyword_match(query_words, labels[int(i)])
    return kw


def _word_stem(word: str) -> str:
    return word[: max(4, min(6, len(word) - 2))]  # crude stem: 'apologetic' ~ 'apologies'


def _keyword_match(query_words: list[str], text: str) -> float:
    """Share of the query's content words found (as word prefixes, so 'apolog' hits 'apology')."""
    if not query_words:
        return 0.0
    words = _words(text)
    hits = 0
    for q in query_words:
        stem = _word_stem(q)
        if any(w == q or (len(w) >= 4 and w.startswith(stem)) for w in words):
            hits += 1
    return hits / len(query_words)


KEYWORD_WEIGHT = 0.2


@reads_store
def search_features(store: Store | str | Path, query: str, k: int = 20, sae: str | None = None) -> pl.DataFrame:
    """Latents whose labels best match ``query``, best first.

    ``score = similarity + 0.2 × keyword_match``: MiniLM cosine similarity between the query and
    each label finds paraphrases ("apologetic tone" ~ "saying sorry"); the keyword boost lifts labels
    that literally name the query's words, which short labels need because MiniLM similarities of
    one-word labels are noisy. Every label source of a latent is searched and the best-matching one
    is reported (a latent's ``context`` row is no label and is not searched). Columns: sae, feature_id,
    label, label_source, label_score (the label's detection score, :mod:`saeembed.labels.score`),
    similarity, keyword_match, score.
    """
    if not query or not query.strip():
        raise UserError("the search query is empty; pass some words, e.g. --search 'apologetic tone'")
    if k <= 0:
        raise UserError("--k must be positive")
    st = store  # reads_store has opened it
    where, params = "", None
    if sae is not None:
        where, params = "WHERE sae = ?", [resolve_sae_id(st, sae)["sae"]]
    rows = _searched_labels(st, where, params)
    out_schema = {"sae": pl.String, "feature_id": pl.Int32, "label": pl.String, "label_source": pl.String,
                  "label_score": pl.Float64, "similarity": pl.Float64, "keyword_match": pl.Float64,
                  "score": pl.Float64}
    if rows.height == 0:
        return pl.DataFrame(schema=out_schema)

    q = get_embedder().embed([query.strip()])[0]
    qwords = _words(query)
    parts = []
    for _, grp in rows.group_by("sae", "label_source", maintain_order=True):
        labels = grp["label"].to_list()
        emb = embed_labels(labels)
        kw = _keyword_matches(qwords, grp["label"])
        parts.append(grp.select("sae", "feature_id", "label", "label_source", "label_score").with_columns(
            pl.Series("similarity", (emb @ q).astype(np.float64)), pl.Series("keyword_match", kw, pl.Float64)))
    res = pl.concat(parts).with_columns(
        (pl.col("similarity") + KEYWORD_WEIGHT * pl.col("keyword_match")).alias("score"))
    res = (res.sort("score", descending=True).unique(["sae", "feature_id"], keep="first", maintain_order=True)
           .head(k).cast(out_schema))
    return res.select(list(out_schema))


__all__ = ["QUERY_STOP_WORDS", "search_features", "embed_labels", "label_text_vectors", "label_vectors",
           "label_embedding_file", "KEYWORD_WEIGHT"]
