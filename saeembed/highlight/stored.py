"""Where a latent fires in a stored document, read from the store: no reader, no forward.

At encode every non-zero (document, latent) keeps the position of its strongest token (``peak_pos``,
the first one on ties), and every document where each pooled token ends in its text
(``token_ends``; the tokens tile the text). A snippet is then the document's text with that
token's characters marked: the token the reader's own recomputation (:mod:`saeembed.highlight`)
shows as the strongest, at the same character. Corpora stored before positions were kept have
none; :func:`split_by_positions` tells callers which documents must take the reader path instead,
and :func:`note_reader_fallback` says so once per corpus on stderr.

Per-token shading of every firing token still needs the reader (``--shade``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from ..corpus import document_text
from ..ids import corpus_of

if TYPE_CHECKING:
    from ..store.handle import Store

log = logging.getLogger(__name__)
_TOLD: set[tuple[str, int]] = set()


@dataclass(frozen=True)
class StoredDoc:
    """A document's text as shown, and where each of its pooled tokens ends in it (None: the corpus
    has none, e.g. a document-level reader's, whose one vector has no token)."""

    text: str
    ends: list[int] | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.ends) if self.ends is not None else 0

    def span(self, pos: int | None) -> tuple[int, int] | None:
        """Characters ``(start, end)`` of pooled token ``pos``; None when it has none."""
        if pos is None or self.ends is None or not 0 <= pos < len(self.ends):
            return None
        return (int(self.ends[pos - 1]) if pos else 0), int(self.ends[pos])


@dataclass(frozen=True)
class Peak:
    """One (document, latent): its max-pooled value, how many tokens it fires on, and the pooled token
    where it peaks (the first of equal maxima); None when the latent does not fire in the document."""

    doc_id: int
    feature_id: int
    value: float
    n_active: int
    peak_pos: int | None
    doc: StoredDoc

    @property
    def text(self) -> str:
        return self.doc.text

    @property
    def peak(self) -> tuple[int, int] | None:
        """Characters of the strongest token."""
        return self.doc.span(self.peak_pos)


def corpora_with_positions(store: Store, doc_ids: Iterable[int]) -> dict[int, bool]:
    """corpus_id → whether the corpus was stored with token positions, for the corpora of ``doc_ids``."""
    ids = sorted({corpus_of(d) for d in doc_ids})
    if not ids:
        return {}
    rows = store.con.execute("SELECT corpus_id, config FROM corpora WHERE corpus_id IN (SELECT unnest(?::INTEGER[]))",
                             [ids]).fetchall()
    return {int(c): bool(json.loads(cfg or "{}").get("token_positions")) for c, cfg in rows}


def split_by_positions(store: Store, doc_ids: Iterable[int]) -> tuple[list[int], list[int]]:
    """(documents whose corpus has stored positions, documents that need the reader)."""
    doc_ids = list(dict.fromkeys(int(d) for d in doc_ids))
    has = corpora_with_positions(store, doc_ids)
    stored = [d for d in doc_ids if has.get(corpus_of(d))]
    return stored, [d for d in doc_ids if not has.get(corpus_of(d))]


def note_reader_fallback(store: Store, doc_ids: Iterable[int]) -> None:
    """Say once per corpus (and process) that its highlights re-run the reader, and how to avoid it."""
    for cid in sorted({corpus_of(d) for d in doc_ids}):
        if (str(store.path), cid) in _TOLD:
            continue
        _TOLD.add((str(store.path), cid))
        row = store.con.execute("SELECT name FROM corpora WHERE corpus_id = ?", [cid]).fetchall()
        name = row[0][0] if row else f"#{cid}"
        log.warning("corpus %r was stored without token positions (by an older saeembed): its highlights re-run "
                    "the reader, which takes a while; re-encode it (saeembed drop %s, then encode) to show them at "
                    "once", name, name)


def stored_documents(store: Store, doc_ids: list[int]) -> dict[int, StoredDoc]:
    """doc_id → :class:`StoredDoc` (a chat document as its messages' contents, one per line)."""
    rows = store.con.execute(
        """SELECT d.doc_id, d.text, d.token_ends, c.config FROM documents d JOIN corpora c
           USING (corpus_id) WHERE d.doc_id IN (SELECT unnest(?::BIGINT[]))""", [[int(d) for d in doc_ids]]).fetchall()
    out = {}
    for doc_id, text, ends, config in rows:
        kind = (json.loads(config or "{}").get("extra") or {}).get("kind")
        shown = document_text(json.loads(text)) if kind == "messages" and text else str(text or "")
        out[int(doc_id)] = StoredDoc(shown, ends)
    return out


def read_peaks(store: Store, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Peak]:
    """The :class:`Peak` of each (doc_id, feature_id) pair (a latent that does not fire in the document
    gets value 0 and no position); for documents of corpora with stored positions."""
    pairs = list(dict.fromkeys((int(d), int(f)) for d, f in pairs))
    if not pairs:
        return {}
    doc_ids = sorted({d for d, _ in pairs})
    feats = sorted({f for _, f in pairs})
    acts = store.con.execute(
        """SELECT doc_id, feature_id, value, n_active, peak_pos FROM activations
           WHERE feature_id IN (SELECT unnest($f::INTEGER[])) AND doc_id IN (SELECT unnest($d::BIGINT[]))""",
        {"f": feats, "d": doc_ids}).fetchall()
    found = {(int(d), int(f)): (float(v), int(n or 0), p) for d, f, v, n, p in acts}
    docs = stored_documents(store, doc_ids)
    out = {}
    for d, f in pairs:
        v, n, p = found.get((d, f), (0.0, 0, None))
        out[(d, f)] = Peak(d, f, v, n, p, docs.get(d, StoredDoc("")))
    return out


def marked_text(peak: Peak) -> str:
    """The document's text with its strongest token wrapped in ``<<`` ``>>`` (its leading whitespace
    outside the marks, as :func:`saeembed.highlight.render` writes a marked run, unless the token is
    only whitespace)."""
    if peak.peak is None or peak.peak[0] >= peak.peak[1]:
        return peak.text
    s, e = mark_span(peak.text, *peak.peak)
    return f"{peak.text[:s]}<<{peak.text[s:e]}>>{peak.text[e:]}"


def mark_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The part of a token's span to mark: without its leading whitespace, so a marked word reads as
    a word; the whole span when the token is only whitespace."""
    body = text[start:end]
    lead = len(body) - len(body.lstrip())
    return (start + lead, end) if lead < len(body) else (start, end)


__all__ = ["Peak", "StoredDoc", "read_peaks", "stored_documents", "marked_text", "mark_span", "split_by_positions",
           "corpora_with_positions", "note_reader_fallback"]
