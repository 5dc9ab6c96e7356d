"""Property retrieval: rank a corpus' documents by a property named in words or shown by example.

``sae`` (paper): latents are ranked by the similarity of their labels to the query (top 100); the
r-th gets weight ``exp(−r / (k·T))`` with T = 0.2 and k the number of selected latents; every
activation is divided by the 90th percentile of that latent's non-zero activations in the corpus;
``score = Σ w_i · a_i / p90_i``. The scoring is one SQL aggregate (``queries/search_sae.sql``).

``example``: the query *text* is encoded with the corpus' own reader and SAE; its max-pooled
latents, normalised by the same p90 and multiplied by their IDF in the corpus, are the weights —
retrieval by what the text is like, with no labels needed. ``dense``: MiniLM cosine between query
and documents (the paper's baseline; doc embeddings are computed once per corpus and cached in a
sidecar ``<store>.dense/<corpus>.parquet`` because analyses never write to the store). ``hybrid``:
reciprocal-rank fusion (k = 60) of ``sae`` and ``dense``, which the paper finds beats either alone;
rows carry both input ranks.

``fuse``: the same documents encoded again as another corpus (typically ``--sae doc``, the
document-level SAE, beside the token-level default) rank the query on their own latents, and the
rankings are fused by the same RRF. Why: the two SAEs fail on different properties (one word
decides vs what a document is about), so their ranks combine better than either does with dense
MiniLM (measured on the evaluation's 15 tasks). Documents are matched by their row in the input,
and only corpora encoded from the same documents (same fingerprint) can be fused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ..errors import UserError
from ..ids import ROW_MASK
from ..models import corpus_models
from ..options import resolve
from ..store.corpusinfo import corpus_info
from ..store.handle import reads_store
from ..store.queries import run_query
from ..store.stats import corpus_stats
from .common import doc_texts, feature_labels
from .dense import dense_ranking
from .options import TEMPERATURE, SearchOptions
from .select import select_features

if TYPE_CHECKING:
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store

MODES = ("sae", "dense", "hybrid", "example")
RRF_K = 60
FUSION_DEPTH = 1000
EXPLAIN_MAX = 5  # latents an explanation names at most ...
EXPLAIN_SHARE = 2 / 3  # ... stopping once they make up this share of the document's SAE score
CONTRIBUTION = pl.Struct({"feature_id": pl.Int32, "contribution": pl.Float64})


def rank_weights(n: int, temperature: float = TEMPERATURE) -> np.ndarray:
    """exp(−r / (n·T)) for ranks r = 0..n−1: the paper's decay over label-similarity ranks."""
    r = np.arange(n, dtype=np.float64)
    return np.exp(-r / (max(n, 1) * temperature))


def score_documents(store: Store, info: CorpusInfo, feature_ids: list[int], weights: list[float],
                    k: int) -> pl.DataFrame:
    """(doc_id, score, top_feature, contributions) of the best ``k`` documents for weighted latents.

    Each weight is divided by the latent's p90 from the corpus' latent statistics; the scoring is
    one SQL aggregate over the selected latents' activations (``queries/search_sae.sql``). A score is
    the sum of its latents' contributions; ``contributions`` lists the ``EXPLAIN_MAX`` largest.
    """
    empty = pl.DataFrame(schema={"doc_id": pl.Int64, "score": pl.Float64, "top_feature": pl.Int32,
                                 "contributions": pl.List(CONTRIBUTION)})
    if not feature_ids:
        return empty
    p90 = dict(corpus_stats(store, info, ["p90"], feature_ids).iter_rows())
    scales = [(int(f), float(w) / max(p90[int(f)], 1e-12)) for f, w in zip(feature_ids, weights) if int(f) in p90]
    if not scales:  # none of the latents fires in this corpus
        return empty
    res = run_query(store, "search_sae", {"lo": info.lo, "hi": info.hi, "features": [f for f, _ in scales],
                                          "scales": [w for _, w in scales], "k": int(k), "explain": EXPLAIN_MAX})
    return res.cast({"top_feature": pl.Int32, "contributions": pl.List(CONTRIBUTION)}) if res.height else empty


def encode_query(store: Store, info: CorpusInfo, text: str,
                 max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Max-pooled latents (ids, values) of ``text`` read exactly as the corpus was encoded.

    ``max_tokens`` refuses a longer text before the reader runs: the reader's cost grows with the
    text, so a server (the browser) bounds what one request may cost.
    """
    import torch

    from ..reader import pad_batch

    path = store.con.execute("SELECT path FROM saes WHERE sae = ?", [info.sae]).fetchall()
    if not path or not path[0][0]:
        raise UserError(f"the store does not record where SAE {info['sae']!r} lives; --mode example needs it")
    rdr, sae = corpus_models(info.reader, info.layer, info.config, path[0][0])
    windows = rdr.windows(text, 0)
    n_tokens = sum(w.n_pooled for w in windows)
    if max_tokens is not None and n_tokens > max_tokens:
        raise UserError(f"the example text is {n_tokens} tokens long; a search here reads at most {max_tokens}; "
                        "shorten it")
    pooled = torch.zeros(sae.d_sae)
    with torch.inference_mode():
        for w in windows:
            ids, attn, pool = pad_batch([w], rdr.pad_id)
            h = rdr.hidden_states(ids, attn)[0][pool[0].to(rdr.device)]
            if h.shape[0]:
                pooled = torch.maximum(pooled, sae.encode(h).float().amax(0).cpu())
    nz = torch.nonzero(pooled > 0).ravel().numpy()
    return nz.astype(np.int64), pooled.numpy()[nz].astype(np.float64)


def example_weights(store: Store, info: CorpusInfo, text: str, idf: bool = True,
                    max_tokens: int | None = None) -> tuple[list[int], list[float]]:
    """Latent weights of a query-by-example text: its max-pooled activation over the corpus' p90
    (the same normalisation the documents get), times the latent's IDF ``log((N + 1) / (n_i + 1))``.

    Why IDF: a text activates dozens of latents, and those that fire in most documents (syntax,
    position, register) otherwise dominate the score and pull in documents that merely look like
    text. Latents that never fire in the corpus cannot score a document and are dropped.
    """
    fids, vals = encode_query(store, info, text, max_tokens)
    if len(fids) == 0:
        raise UserError("the example text activates no latent; give a longer example")
    stats = corpus_stats(store, info, ["n_present", "p90"], fids.tolist())
    p90 = dict(zip(stats["feature_id"].to_list(), stats["p90"].to_list()))
    present = dict(zip(stats["feature_id"].to_list(), stats["n_present"].to_list()))
    n = float(info.n_docs)
    out_f, out_w = [], []
    for f, v in zip(fids.tolist(), vals.tolist()):
        if f in p90:
            w = v / max(p90[f], 1e-12)
            if idf:
                w *= float(np.log((n + 1) / (present[f] + 1)))
            out_f.append(int(f))
            out_w.append(float(w))
    if not out_f:
        raise UserError("no latent of the example text fires anywhere in this corpus; try another example")
    return out_f, out_w


def fuse(sae: pl.DataFrame, dense: pl.DataFrame | None = None, k: int = 10, rrf_k: int = RRF_K,
         partners: dict[str, pl.DataFrame] | None = None) -> pl.DataFrame:
    """Reciprocal-rank fusion: score = Σ 1 / (rrf_k + rank) over the rankings (rank from 1).

    Why RRF rather than mixing scores: SAE scores (sums of p90-normalised activations) and cosine
    similarities live on unrelated scales; ranks do not, and RRF needs no tuning to be robust.
    A document missing from one ranking simply gets no contribution from it. ``partners``: more
    rankings (column name of their rank → frame with ``doc_id`` in this corpus' ids).
    """
    others = {**({"dense_rank": dense} if dense is not None else {}), **(partners or {})}
    carried: list[Any] = [c for c in ("top_feature", "contributions", "sae_score", "length_baseline")
                          if c in sae.columns]
    carried += [pl.col("score").alias("sae_score")] if "contributions" in sae.columns and "sae_score" not in \
        sae.columns else []
    both = sae.select("doc_id", *carried).with_row_index("sae_rank", offset=1)
    for column, frame in others.items():
        both = both.join(frame.select("doc_id").with_row_index(column, offset=1), on="doc_id", how="full",
                         coalesce=True)
    ranked = ["sae_rank", *others]
    contrib = [pl.when(pl.col(c).is_null()).then(0.0).otherwise(1.0 / (rrf_k + pl.col(c).cast(pl.Float64)))
               for c in ranked]
    return (both.with_columns(pl.sum_horizontal(contrib).alias("score"))
            .sort(["score", "doc_id"], descending=[True, False]).head(k)
            .with_columns(pl.col(c).cast(pl.Int64) for c in ranked))


def fuse_partner(store: Store, info: CorpusInfo, partner: str) -> Any:
    """The partner corpus' registry row, after checking it holds this corpus' documents."""
    if partner == info.name:
        raise UserError(f"--fuse {partner}: a corpus cannot be fused with itself; name a corpus holding the same "
                        "documents encoded with another SAE (e.g. `--sae doc`)")
    other = corpus_info(store, partner)
    mine, theirs = info.settings.get("corpus_fingerprint"), other.settings.get("corpus_fingerprint")
    if (mine and theirs and mine != theirs) or other["n_docs"] != info.n_docs:
        raise UserError(f"--fuse {partner}: corpus {partner!r} does not hold the same documents as {info['name']!r}; "
                        f"encode the same input file again, e.g. `saeembed encode FILE --name {info['name']}-doc "
                        "--sae doc`, and fuse with that")
    return other


def rank_column(partner: str) -> str:
    """The partner's rank column: ``<corpus>_rank``, unless that would read as one of the fixed ones."""
    column = f"{partner}_rank"
    return f"corpus_{column}" if column in ("sae_rank", "dense_rank") else column


def _ranking(store: Store, info: CorpusInfo, query: str, o: SearchOptions, depth: int) -> pl.DataFrame:
    """This corpus' own ranking in sae/example mode (hybrid adds dense to it later)."""
    if o.mode == "example":
        fids, weights = example_weights(store, info, query, idf=o.idf, max_tokens=o.max_example_tokens)
        return score_documents(store, info, fids, weights, depth)  # an example's own length is its query
    sel = select_features(store, query, info.sae, k=o.n_features, method=o.select, info=info,
                          alternative="use --mode example or --mode dense").head(o.n_features)
    w = rank_weights(sel.height, o.temperature)
    ranked = score_documents(store, info, sel["feature_id"].to_list(), w.tolist(),
                             int(info.n_docs) if o.length_adjust else depth)
    return length_adjusted(store, info, ranked, depth) if o.length_adjust else ranked


def length_adjusted(store: Store, info: CorpusInfo, res: pl.DataFrame, depth: int) -> pl.DataFrame:
    """The best ``depth`` documents by ``score = sae_score − length_baseline``: the latent score less
    what a document of its length scores on average (least squares of the latent score on log token
    count over every document of the corpus; a document no selected latent fires in scores 0).

    Why: a document's max-pooled latents grow with its length (a longer text has more chances to
    fire any latent), so the sum over query latents ranks long documents first whatever the query
    asks for — the same confound as in diffing. Removing the length trend, as BM25 normalises term
    frequencies by document length. Off by default (``--length-adjust``): it raised MAP on the
    evaluation's development tasks (0.600 → 0.626 on the 8 property tasks, 0.361 → 0.375 on the 6
    style tasks) but not on the held-out ones (0.421 → 0.425 property, 0.426 → 0.401 style, where
    the property asked for is itself partly length: "verbose", "written by an LLM").
    """
    docs = store.sql("SELECT doc_id, n_tokens FROM documents WHERE corpus_id = ?", [info.corpus_id])
    full = docs.join(res.select("doc_id", "score"), on="doc_id", how="left").with_columns(
        pl.col("score").fill_null(0.0))
    x = np.log1p(full["n_tokens"].fill_null(0).to_numpy().astype(np.float64))
    y = full["score"].to_numpy()
    slope, icpt = np.polyfit(x, y, 1) if len(np.unique(x)) > 1 else (0.0, float(y.mean()) if len(y) else 0.0)
    base = full.select("doc_id", pl.Series("length_baseline", slope * x + icpt))
    return (res.rename({"score": "sae_score"}).join(base, on="doc_id")
            .with_columns((pl.col("sae_score") - pl.col("length_baseline")).alias("score"))
            .sort(["score", "doc_id"], descending=[True, False]).head(depth))


def _partner_ranking(store: Store, info: CorpusInfo, other: CorpusInfo, query: str, o: SearchOptions,
                     depth: int) -> pl.DataFrame:
    """The partner's ranking with its doc ids mapped to this corpus' (the same input row)."""
    res = _ranking(store, other, query, o, depth)
    return res.select((pl.lit(int(info.lo), pl.Int64) | (pl.col("doc_id") & ROW_MASK)).alias("doc_id"))


@reads_store
def search(store: Store | str | Path, corpus: str, query: str, options: SearchOptions | None = None,
           **kwargs: Any) -> pl.DataFrame:
    """The ``k`` documents of ``corpus`` that best match ``query``, best first.

    Columns: rank, doc_id, row_idx, score; (hybrid, ``length_adjust``) sae_score, the sum of the
    selected latents' contributions (``score`` itself in plain sae mode); (``length_adjust``)
    length_baseline, what a document of that length scores on average, with ``score`` = sae_score −
    length_baseline (:func:`length_adjusted`); (hybrid, ``fuse``) sae_rank / dense_rank and
    ``<partner>_rank`` per fused corpus; and in ``sae``, ``example`` and ``hybrid`` modes
    top_feature / top_label (the latent contributing most to the document's SAE score),
    explanation / contributions (the latents that make up most of that score, with their
    contributions: :func:`explain`), then text (clipped to ``text_chars``). See the module docstring
    for the modes. Raises a :class:`UserError` for an unknown mode, an empty query, or (``sae``) a
    query that selects no latent. Options: :class:`~saeembed.analysis.options.SearchOptions`.
    """
    o = resolve(SearchOptions, options, kwargs, "search")
    st = store
    if o.mode not in MODES:
        raise UserError(f"unknown mode {o.mode!r}; use one of {', '.join(MODES)}")
    if not query or not query.strip():
        raise UserError("the search query is empty")
    if o.k <= 0 or o.n_features <= 0 or o.temperature <= 0:
        raise UserError("--k, --n-features and the temperature must be positive")
    partners = [o.fuse] if isinstance(o.fuse, str) else list(o.fuse or [])
    if partners and o.mode == "dense":
        raise UserError("--fuse applies to --mode sae, hybrid and example (dense mode has no latents to fuse)")
    info = corpus_info(st, corpus)
    others = {rank_column(p): fuse_partner(st, info, p) for p in dict.fromkeys(partners)}
    depth = max(o.k, FUSION_DEPTH) if o.mode == "hybrid" or others else o.k
    res = dense_ranking(st, info, query, depth, o.cache) if o.mode == "dense" else _ranking(st, info, query, o, depth)
    if o.mode == "hybrid" or others:
        dense = dense_ranking(st, info, query, depth, o.cache) if o.mode == "hybrid" else None
        res = fuse(res, dense, o.k, partners={c: _partner_ranking(st, info, other, query, o, depth)
                                              for c, other in others.items()})
    res = res.head(o.k).with_columns(pl.int_range(1, pl.len() + 1).alias("rank"),
                                     (pl.col("doc_id") & ROW_MASK).alias("row_idx"))
    texts = doc_texts(st, res["doc_id"].to_list(), o.text_chars)
    res = res.with_columns(pl.Series("text", [texts.get(int(d), "") for d in res["doc_id"]], pl.String))
    cols = ["rank", "doc_id", "row_idx", "score"] + [c for c in ("sae_score", "length_baseline", "sae_rank",
                                                                 "dense_rank", *others) if c in res.columns]
    if "top_feature" in res.columns:
        res = explain(st, info.sae, res)
        cols += ["top_feature", "top_label", "explanation", "contributions"]
    return res.select(cols + ["text"])


def explained(contributions: list[dict[str, Any]] | None, score: float | None) -> list[dict[str, Any]]:
    """The largest contributions, in order, until they make up ``EXPLAIN_SHARE`` of ``score``."""
    out: list[dict[str, Any]] = []
    total = 0.0
    for c in contributions or []:
        if out and score and total >= EXPLAIN_SHARE * score:
            break
        out.append(c)
        total += c["contribution"]
    return out


def explain(store: Store, sae: str, res: pl.DataFrame) -> pl.DataFrame:
    """Name the latents that made each document match: ``contributions`` (feature_id, label,
    contribution; largest first, until they make up two thirds of the document's SAE score) and
    ``explanation``, the same as text (``41% 3600 "insane, ridiculous" · 22% 88 "lol"``);
    ``top_feature`` / ``top_label`` are the first of them."""
    score_col = "sae_score" if "sae_score" in res.columns else "score"
    kept = [explained(c, s) for c, s in zip(res["contributions"].to_list(), res[score_col].to_list())]
    ids = sorted({int(c["feature_id"]) for cs in kept for c in cs} | {int(f) for f in res["top_feature"].drop_nulls()})
    labels = dict(feature_labels(store, sae, ids).iter_rows())
    rows, texts = [], []
    for cs, s in zip(kept, res[score_col].to_list()):
        rows.append([{"feature_id": int(c["feature_id"]), "label": labels.get(int(c["feature_id"])),
                      "contribution": float(c["contribution"])} for c in cs])
        texts.append(" · ".join(f"{c['contribution'] / s:.0%} {c['feature_id']} \"{c['label'] or ''}\""
                                for c in rows[-1]) if s else "")
    typed = pl.List(pl.Struct({"feature_id": pl.Int32, "label": pl.String, "contribution": pl.Float64}))
    return res.with_columns(
        pl.col("top_feature").cast(pl.Int32),
        pl.Series("top_label", [labels.get(int(f)) if f is not None else None for f in res["top_feature"]],
                  pl.String),
        pl.Series("explanation", texts, pl.String), pl.Series("contributions", rows, typed))


__all__ = ["search", "score_documents", "rank_weights", "encode_query", "fuse", "explain", "explained", "MODES"]
