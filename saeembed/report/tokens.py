"""Documents with the tokens where latents fire, shaded by strength, for reports and the browser.

Token activations are recomputed by :func:`saeembed.highlight.token_activations` (the corpus'
own reader and SAE, one forward per document). Strength is the activation over the largest
activation of that latent among the documents fetched together, so the examples of one latent
are comparable with each other. When recomputation is impossible (SAE moved, model missing)
the plain text is shown and the view says so: an example is never lost for want of a highlight.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import polars as pl

from ..errors import UserError

if TYPE_CHECKING:
    from ..store.handle import Store

WINDOW_TOKENS = 60  # tokens kept on each side of the strongest one
PLAIN_CHARS = 400
CACHE_PAIRS = 20_000  # (document, latent) token rows kept per process

_CACHE: OrderedDict[tuple, pl.DataFrame] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _store_key(store: Store) -> tuple:
    """The store file and its last write: any write (a new encode, new labels) starts a new cache."""
    path = Path(store.path)
    stamps = tuple(q.stat().st_mtime_ns if q.exists() else 0 for q in (path, path.with_name(path.name + ".wal")))
    return (str(path.resolve()), stamps)


def cached_token_activations(store: Store, doc_ids: list[int], feature_ids: list[int]) -> pl.DataFrame:
    """:func:`saeembed.highlight.token_activations`, recomputing only (document, latent) pairs not
    seen before in this process: a browser page reloaded, or a report and a page showing the same
    documents, cost no new forward."""
    from ..highlight import TOKEN_SCHEMA, token_activations

    key = _store_key(store)
    with _CACHE_LOCK:
        missing = [(d, f) for d in doc_ids for f in feature_ids if (key, d, f) not in _CACHE]
    if missing:
        new = token_activations(store, sorted({d for d, _ in missing}), sorted({f for _, f in missing}))
        groups = {(int(d), int(f)): g for (d, f), g in new.group_by("doc_id", "feature_id")}
        with _CACHE_LOCK:
            for d, f in missing:
                _CACHE[(key, d, f)] = groups.get((d, f), pl.DataFrame(schema=TOKEN_SCHEMA))
            while len(_CACHE) > CACHE_PAIRS:
                _CACHE.popitem(last=False)
    with _CACHE_LOCK:
        parts = [_CACHE[(key, d, f)] for d in doc_ids for f in feature_ids if (key, d, f) in _CACHE]
    return pl.concat(parts) if parts else pl.DataFrame(schema=TOKEN_SCHEMA)


@dataclass(frozen=True)
class Segment:
    """A run of text; ``strengths``/``values`` per latent of the view (all 0 for unmarked text)."""

    text: str
    strengths: tuple[float, ...]
    values: tuple[float, ...]

    @property
    def marked(self) -> bool:
        return any(v > 0 for v in self.values)


@dataclass(frozen=True)
class DocView:
    doc_id: int
    features: tuple[int, ...]
    segments: tuple[Segment, ...]
    highlighted: bool  # False: token activations could not be recomputed; plain text
    clipped_start: bool = False
    clipped_end: bool = False

    @property
    def marked_text(self) -> list[str]:
        """The texts of the marked segments (what a reader sees highlighted)."""
        return [s.text for s in self.segments if s.marked]


def _plain(doc_id: int, features: tuple[int, ...], text: str, chars: int = PLAIN_CHARS) -> DocView:
    text = " ".join(str(text or "").split())
    zero = tuple(0.0 for _ in features)
    return DocView(doc_id, features, (Segment(text[:chars], zero, zero),), False, False, len(text) > chars)


def _texts(store: Store, doc_ids: list[int]) -> dict[int, str]:
    df = store.sql("SELECT doc_id, text FROM documents WHERE doc_id IN (SELECT unnest(?::BIGINT[]))",
                   [[int(d) for d in doc_ids]])
    return {int(d): str(t or "") for d, t in df.iter_rows()}


def _segments(tokens: list[str], acts: np.ndarray, scale: np.ndarray) -> list[Segment]:
    """Merge unmarked tokens into runs; every marked token is its own segment (its own shade)."""
    out: list[Segment] = []
    zero = tuple(0.0 for _ in range(acts.shape[1]))
    plain: list[str] = []
    for tok, row in zip(tokens, acts):
        if not (row > 0).any():
            plain.append(tok)
            continue
        body = tok.lstrip()
        if body and body != tok:  # leading space outside the mark, so a marked word reads as a word
            plain.append(tok[: len(tok) - len(body)])
            tok = body
        if plain:
            out.append(Segment("".join(plain), zero, zero))
            plain = []
        strengths = tuple(round(float(min(1.0, v / s)), 2) if s > 0 and v > 0 else 0.0 for v, s in zip(row, scale))
        out.append(Segment(tok, strengths, tuple(round(float(v), 3) for v in row)))
    if plain:
        out.append(Segment("".join(plain), zero, zero))
    return out


def _view(doc_id: int, features: tuple[int, ...], grp: pl.DataFrame, scale: dict[int, float],
          window: int) -> DocView:
    """One document from its token rows (all latents): clip around the first latent's peak."""
    wide = grp.pivot(on="feature_id", index=["position", "token"], values="activation",
                     aggregate_function="max").sort("position")
    tokens = wide["token"].to_list()
    acts = np.stack([wide[str(f)].fill_null(0).to_numpy().astype(np.float64) if str(f) in wide.columns
                     else np.zeros(len(tokens)) for f in features], axis=1)
    peak = int(np.argmax(acts[:, 0])) if len(tokens) else 0
    lo, hi = max(0, peak - window), min(len(tokens), peak + window + 1)
    segs = _segments(tokens[lo:hi], acts[lo:hi], np.array([scale.get(f, 0.0) for f in features]))
    return DocView(doc_id, features, tuple(segs), True, lo > 0, hi < len(tokens))


class Highlighter:
    """Token activations of a set of documents for a set of latents, computed once (one batch of
    forwards), from which any number of views (latents, window) are cut."""

    def __init__(self, store: Store, doc_ids: Iterable[int], feature_ids: Iterable[int],
                 plain_ids: Iterable[int] = ()) -> None:
        self.doc_ids = sorted({int(d) for d in doc_ids})
        feats = sorted({int(f) for f in feature_ids})
        self.tokens: pl.DataFrame | None = None
        if self.doc_ids and feats:
            try:
                self.tokens = cached_token_activations(store, self.doc_ids, feats)
            except (UserError, OSError, ImportError):
                self.tokens = None  # plain text below
        self._texts = _texts(store, sorted(set(self.doc_ids) | {int(d) for d in plain_ids}))
        toks = self.tokens if self.tokens is not None else pl.DataFrame(schema={"doc_id": pl.Int64,
                                                                                 "feature_id": pl.Int32,
                                                                                 "activation": pl.Float32})
        self._scale = dict(toks.group_by("feature_id").agg(pl.col("activation").max()).iter_rows())
        self._by_doc = {int(k[0]): g for k, g in toks.group_by("doc_id")}

    def view(self, doc_id: int, features: Iterable[int], window: int = WINDOW_TOKENS) -> DocView:
        """The document clipped to ``window`` tokens around the first latent's strongest token."""
        fs = tuple(int(f) for f in features)
        grp = self._by_doc.get(int(doc_id))
        if grp is None or not grp.height or not fs:
            return self.plain(doc_id, fs)
        return _view(int(doc_id), fs, grp, self._scale, window)

    def first_firing(self, doc_id: int, features: Iterable[int]) -> int | None:
        """The first of ``features`` that fires somewhere in the document (None: none does)."""
        grp = self._by_doc.get(int(doc_id))
        if grp is None:
            return None
        fired = set(grp.filter(pl.col("activation") > 0)["feature_id"].to_list())
        return next((int(f) for f in features if int(f) in fired), None)

    def plain(self, doc_id: int, features: Iterable[int] = (), chars: int = PLAIN_CHARS) -> DocView:
        return _plain(int(doc_id), tuple(int(f) for f in features), self._texts.get(int(doc_id), ""), chars)


def doc_views(store: Store, wanted: Iterable[tuple[int, tuple[int, ...]]],
              window: int = WINDOW_TOKENS) -> dict[tuple[int, tuple[int, ...]], DocView]:
    """(doc_id, latents) → the document with those latents' tokens shaded (first latent: colour 1,
    second: colour 2)."""
    wanted = list(dict.fromkeys((int(d), tuple(int(f) for f in fs)) for d, fs in wanted))
    hl = Highlighter(store, [d for d, _ in wanted], [f for _, fs in wanted for f in fs])
    return {(d, fs): hl.view(d, fs, window) for d, fs in wanted}


__all__ = ["DocView", "Segment", "Highlighter", "doc_views", "WINDOW_TOKENS"]
