"""Documents with the tokens where latents fire marked, for reports and the browser.

By default a view is read from the store (:mod:`saeembed.highlight.stored`): each latent's strongest token is
shaded by its activation, with no forward at all. ``shade``
(``--shade``) shades every token by its activation instead, recomputed by
:func:`saeembed.highlight.token_activations` (the corpus' own reader and SAE, batched across the
documents of a view and cached in the process); corpora stored without token positions take that
path too. Strength is the activation over the largest activation of that latent among the
documents fetched together, so the examples of one latent are comparable with each other. When
recomputation is impossible (SAE moved, model missing) the plain text is shown and the view says
so: an example is never lost for want of a highlight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import numpy as np
import polars as pl

from ..errors import UserError
from .stored import mark_span, note_reader_fallback, read_peaks, split_by_positions

if TYPE_CHECKING:
    from ..store.handle import Store
    from .stored import Peak

WINDOW_TOKENS = 60  # tokens kept on each side of the strongest one
PLAIN_CHARS = 400
@dataclass(frozen=True)
class Segment:
    """A run of text; ``strengths``/``values`` per latent of the view (all 0 for unmarked text);
    ``hint`` says what a mark means where the activation alone does not."""

    text: str
    strengths: tuple[float, ...]
    values: tuple[float, ...]
    hint: str = ""

    @property
    def marked(self) -> bool:
        return any(v > 0 for v in self.values) or any(v > 0 for v in self.strengths)


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
        out.append(Segment(tok, strengths, tuple(float(f"{v:.3g}") for v in row)))
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


def shade_legend(shade: bool, whose: str) -> str:
    """What the colour of a mark means, for ``whose`` latent ("the latent", "the document's top latent")."""
    if shade:
        return f"shade: activation of {whose} on that token"
    return f"shade: strongest token of {whose} (--shade shades every token)"


def _stored_view(doc_id: int, features: tuple[int, ...], peaks: list[Peak | None], scale: dict[int, float],
                 window: int) -> DocView:
    """The document clipped to ``window`` tokens around the first latent's strongest token, each
    latent's strongest token shaded by its activation."""
    doc = next((p.doc for p in peaks if p is not None), None)
    if doc is None or doc.ends is None or not doc.n_tokens:
        return _plain(doc_id, features, doc.text if doc else "")
    n, zero = doc.n_tokens, tuple(0.0 for _ in features)
    center = peaks[0].peak_pos if peaks[0] is not None and peaks[0].peak_pos is not None else 0
    lo, hi = max(0, center - window), min(n, center + window + 1)
    a, b = doc.span(lo)[0], doc.span(hi - 1)[1]
    marks: dict[tuple[int, int], tuple[list[float], list[float], list[str]]] = {}
    for j, (f, p) in enumerate(zip(features, peaks)):
        span = p.peak if p is not None else None
        if span is None or span[0] >= span[1] or not (a <= span[0] and span[1] <= b):
            continue
        top = scale.get(f, 0.0)
        st, vals, hints = marks.setdefault(span, ([0.0] * len(features), [0.0] * len(features), []))
        st[j] = max(0.01, round(min(1.0, p.value / top), 2) if top > 0 else 1.0)
        vals[j] = float(f"{p.value:.3g}")
        hints.append(f"latent {f}: activation {p.value:.3g}, its strongest of {p.n_active} firing tokens")
    segs: list[Segment] = []
    at = a
    for (s, e), (st, vals, hints) in sorted(marks.items()):
        if s < at:  # two latents' strongest tokens overlapping on a split character: keep the first
            continue
        s, e = mark_span(doc.text, s, e)
        if at < s:
            segs.append(Segment(doc.text[at:s], zero, zero))
        segs.append(Segment(doc.text[s:e], tuple(st), tuple(vals), "; ".join(hints)))
        at = e
    if at < b:
        segs.append(Segment(doc.text[at:b], zero, zero))
    return DocView(doc_id, features, tuple(segs), True, lo > 0, hi < n)


class Highlighter:
    """Views of a set of documents for a set of latents, read in one go (stored positions, or with
    ``shade`` one batch of forwards), from which any number of views (latents, window) are cut."""

    def __init__(self, store: Store, doc_ids: Iterable[int], feature_ids: Iterable[int],
                 plain_ids: Iterable[int] = (), shade: bool = False) -> None:
        self.doc_ids = sorted({int(d) for d in doc_ids})
        feats = sorted({int(f) for f in feature_ids})
        stored, by_reader = ([], self.doc_ids) if shade else split_by_positions(store, self.doc_ids)
        self._stored = set(stored)
        self._peaks = read_peaks(store, [(d, f) for d in stored for f in feats]) if stored and feats else {}
        self.tokens: pl.DataFrame | None = None
        if by_reader and feats:
            if not shade:
                note_reader_fallback(store, by_reader)
            try:
                from .recompute import cached_token_activations

                self.tokens = cached_token_activations(store, by_reader, feats)
            except (UserError, OSError, ImportError):
                self.tokens = None  # plain text below
        self._texts = _texts(store, sorted(set(self.doc_ids) | {int(d) for d in plain_ids}))
        toks = self.tokens if self.tokens is not None else pl.DataFrame(schema={"doc_id": pl.Int64,
                                                                                 "feature_id": pl.Int32,
                                                                                 "activation": pl.Float32})
        self._scale = dict(toks.group_by("feature_id").agg(pl.col("activation").max()).iter_rows())
        for (_, f), p in self._peaks.items():
            self._scale[f] = max(self._scale.get(f, 0.0), p.value)
        self._by_doc = {int(k[0]): g for k, g in toks.group_by("doc_id")}

    def view(self, doc_id: int, features: Iterable[int], window: int = WINDOW_TOKENS) -> DocView:
        """The document clipped to ``window`` tokens around the first latent's strongest token."""
        fs = tuple(int(f) for f in features)
        if int(doc_id) in self._stored and fs:
            peaks = [self._peaks.get((int(doc_id), f)) for f in fs]
            if all(p is None for p in peaks):  # latents this highlighter did not read
                return self.plain(doc_id, fs)
            return _stored_view(int(doc_id), fs, peaks, self._scale, window)
        grp = self._by_doc.get(int(doc_id))
        if grp is None or not grp.height or not fs:
            return self.plain(doc_id, fs)
        return _view(int(doc_id), fs, grp, self._scale, window)

    def first_firing(self, doc_id: int, features: Iterable[int]) -> int | None:
        """The first of ``features`` that fires somewhere in the document (None: none does)."""
        if int(doc_id) in self._stored:
            return next((int(f) for f in features
                         if (p := self._peaks.get((int(doc_id), int(f)))) is not None and p.value > 0), None)
        grp = self._by_doc.get(int(doc_id))
        if grp is None:
            return None
        fired = set(grp.filter(pl.col("activation") > 0)["feature_id"].to_list())
        return next((int(f) for f in features if int(f) in fired), None)

    def plain(self, doc_id: int, features: Iterable[int] = (), chars: int = PLAIN_CHARS) -> DocView:
        return _plain(int(doc_id), tuple(int(f) for f in features), self._texts.get(int(doc_id), ""), chars)


def doc_views(store: Store, wanted: Iterable[tuple[int, tuple[int, ...]]],
              window: int = WINDOW_TOKENS, shade: bool = False) -> dict[tuple[int, tuple[int, ...]], DocView]:
    """(doc_id, latents) → the document with those latents' tokens shaded (first latent: colour 1,
    second: colour 2)."""
    wanted = list(dict.fromkeys((int(d), tuple(int(f) for f in fs)) for d, fs in wanted))
    hl = Highlighter(store, [d for d, _ in wanted], [f for _, fs in wanted for f in fs], shade=shade)
    return {(d, fs): hl.view(d, fs, window) for d, fs in wanted}


__all__ = ["DocView", "Segment", "Highlighter", "doc_views", "shade_legend", "WINDOW_TOKENS"]
