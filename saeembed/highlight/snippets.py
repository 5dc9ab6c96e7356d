"""Short example texts with the token where a latent fires marked ``<<…>>``, for terminal tables and LLM prompts.

Marks come from the store's token positions (:mod:`.stored`); corpora stored without them, and
``shade`` (every firing run), recompute token activations with the corpus' reader (:mod:`.recompute`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UserError
from .stored import marked_text, note_reader_fallback, read_peaks, split_by_positions

if TYPE_CHECKING:
    from ..store.handle import Store


def highlighted_examples(store: Store, pairs: list[tuple[int, int]], max_chars: int = 300,
                         shade: bool = False) -> dict[tuple[int, int], str]:
    """Text of (doc_id, feature_id) pairs with the latent's strongest token marked ``<<…>>``, read from
    the store (:mod:`saeembed.peaks`); ``shade``: every run of tokens where it fires is marked,
    recomputed with the corpus' reader (one forward per document).

    Corpora stored without token positions take the reader path (said once on stderr); where the
    reader cannot run (SAE moved, model missing) the plain text is returned, so an example is never
    lost for want of a highlight.
    """
    if not pairs:
        return {}
    stored, by_reader = split_by_positions(store, [d for d, _ in pairs]) if not shade else ([], [d for d, _ in pairs])
    keep = set(stored)
    out = {k: clip_text(marked_text(p), max_chars)
           for k, p in read_peaks(store, [(d, f) for d, f in pairs if d in keep]).items()}
    rest = [(d, f) for d, f in pairs if d not in keep]
    if not rest:
        return out
    if not shade:
        note_reader_fallback(store, by_reader)
    doc_ids = sorted({d for d, _ in rest})
    try:
        from .recompute import cached_token_activations, render

        toks = cached_token_activations(store, doc_ids, sorted({f for _, f in rest}))
        for d, f in rest:
            out[(d, f)] = clip_text(render(toks, d, f, style="markers"), max_chars)
    except (UserError, OSError, ImportError):
        texts = dict(store.sql("SELECT doc_id, text FROM documents WHERE doc_id IN (SELECT unnest(?::BIGINT[]))",
                               [doc_ids]).iter_rows())
        for d, f in rest:
            out[(d, f)] = clip_text(str(texts.get(d, "")), max_chars)
    return out


def clip_text(text: str, n: int) -> str:
    """Keep the first highlight in view: start shortly before it when the text is long."""
    text = " ".join(text.split())
    if len(text) <= n:
        return text
    at = text.find("<<")
    start = max(0, min(at - n // 4, len(text) - n)) if at > n // 2 else 0
    return ("…" if start else "") + text[start:start + n] + "…"


__all__ = ["clip_text", "highlighted_examples"]
