"""Where each latent fires, as short text windows: the material labels are written from and scored on.

A label is only as good as its power to tell where its latent fires, so labels are written from one
set of a latent's contexts and judged on another it never saw (:mod:`.score`). From the reader's
hidden states of some documents (an activation cache, or documents of a store corpus read again) the
SAE's codes are computed once, and every token's window goes into one *bank* (up to ``MAX_BANK``
windows, embedded once with MiniLM and shared by all latents: a token carries k latents, so one
embedding serves k of them). Per latent:

- ``explain``: its strongest activations, one per document (what a label is written from);
- held-out: every bank row where it fires, outside the explain documents, split by document into a
  ``select`` half (even documents: choosing among candidate labels) and a ``score`` half (odd
  documents: the reported score), so neither the writing nor the choosing sees the scored windows;
- negatives: a shared random pool of bank rows, less those where the latent fires.

A window is the ``before`` tokens up to the token and ``after`` tokens past it, all of one document:
the reader is causal, so what precedes a token is what made the latent fire there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch

BEFORE, AFTER = 8, 2  # window around the token (tokens of the same document)
SHOW_BEFORE, SHOW_AFTER = 5, 2  # the shorter window shown in place of a label
DOC_CHARS, SHOW_CHARS = 400, 80  # document-level SAEs: characters of a document scored / shown
N_EXPLAIN = 8  # strongest contexts per latent, one per document: what labels are written from
MAX_BANK = 40_000  # windows embedded at most (every token's window up to this many tokens read)
N_NEGATIVE = 2000  # random windows of the bank: the negatives (those where a latent does not fire)


@dataclass
class TokenCodes:
    """The SAE's non-zero codes on a run of tokens: one (latent, row, value) triple per firing."""

    tok: np.ndarray  # int32 [n] token ids
    doc: np.ndarray  # int32 [n] document of each token (tokens of a document are consecutive)
    latent: np.ndarray  # int32 [m], sorted
    row: np.ndarray  # int64 [m]
    value: np.ndarray  # float32 [m]
    d_sae: int
    starts: np.ndarray = field(init=False)  # latent j's triples are latent[starts[j]:starts[j + 1]]

    def __post_init__(self) -> None:
        self.starts = np.searchsorted(self.latent, np.arange(self.d_sae + 1)).astype(np.int64)

    @property
    def n_tokens(self) -> int:
        return len(self.tok)

    def firing(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, values) where ``latent`` fires."""
        lo, hi = self.starts[latent], self.starts[latent + 1]
        return self.row[lo:hi], self.value[lo:hi]

    def counts(self) -> np.ndarray:
        return np.diff(self.starts)


@torch.no_grad()
def encode_tokens(sae: Any, chunks: Iterable[dict[str, np.ndarray]], batch_size: int = 4096,
                  progress: Callable[[str], None] | None = None) -> TokenCodes:
    """SAE codes of every token of ``chunks`` (dicts with ``acts`` [n, d_in], ``tok``, ``doc``; documents
    of consecutive chunks must not share ids)."""
    toks, docs, lats, rows, vals = [], [], [], [], []
    offset = 0
    for c in chunks:
        acts = torch.as_tensor(np.asarray(c["acts"]))
        for s in range(0, len(acts), batch_size):
            x = acts[s:s + batch_size].float()
            sparse = sae.encode_sparse(x) if hasattr(sae, "encode_sparse") else None
            if sparse is None:
                a = sae.encode(x).float()
                r, j = torch.nonzero(a > 0, as_tuple=True)
                v = a[r, j]
            else:
                v, j = sparse
                r = torch.arange(len(x)).unsqueeze(1).expand_as(j)
                keep = v > 0
                r, j, v = r[keep], j[keep], v[keep]
            lats.append(j.numpy().astype(np.int32))
            rows.append(r.numpy().astype(np.int64) + offset + s)
            vals.append(v.float().numpy())
        toks.append(np.asarray(c["tok"], np.int32))
        docs.append(np.asarray(c["doc"], np.int32))
        offset += len(acts)
        if progress:
            progress(f"contexts: encoded {offset:,} tokens")
    lat = np.concatenate(lats) if lats else np.zeros(0, np.int32)
    order = np.argsort(lat, kind="stable")
    return TokenCodes(np.concatenate(toks) if toks else np.zeros(0, np.int32),
                      np.concatenate(docs) if docs else np.zeros(0, np.int32), lat[order],
                      (np.concatenate(rows) if rows else np.zeros(0, np.int64))[order],
                      (np.concatenate(vals) if vals else np.zeros(0, np.float32))[order], int(sae.d_sae))


@dataclass
class Contexts:
    """Explain rows per latent, the held-out halves, a pool of negative rows, and the window texts."""

    codes: TokenCodes
    explain: dict[int, np.ndarray]  # latent -> its strongest rows, one per document
    bank: np.ndarray  # sorted rows whose windows are embedded: held-out positives and negatives come from them
    negatives: np.ndarray  # sorted rows of the bank, the shared negative pool
    decode: Callable[[list[int]], str]
    texts: list[str] | None = None  # document-level SAEs: a row is a document, its window the text

    @property
    def document_level(self) -> bool:
        return self.texts is not None

    def heldout(self, latent: int, half: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, values) of the bank where ``latent`` fires, outside its explain documents, in the
        ``select`` half (even documents), the ``score`` half (odd documents) or ``all`` (a label
        written elsewhere: an import, an LLM label, the shipped one)."""
        rows, vals = self.codes.firing(latent)
        keep = np.isin(rows, self.bank, assume_unique=False)
        explain = self.explain.get(latent)
        if explain is not None and len(explain):
            keep &= ~np.isin(self.codes.doc[rows], self.codes.doc[explain])
        if half != "all":
            keep &= (self.codes.doc[rows] % 2) == (0 if half == "select" else 1)
        return rows[keep], vals[keep]

    def window(self, row: int, before: int = BEFORE, after: int = AFTER, mark: bool = False) -> str:
        """Text of the window around ``row``; ``mark`` puts ``<<…>>`` around the token. A document-level
        SAE's window is the start of the document."""
        if self.texts is not None:
            return " ".join(str(self.texts[int(self.codes.doc[row])]).split())[:DOC_CHARS]
        doc, tok = self.codes.doc, self.codes.tok
        lo = row
        while lo > 0 and row - lo < before and doc[lo - 1] == doc[row]:
            lo -= 1
        hi = row
        while hi + 1 < len(tok) and hi - row < after and doc[hi + 1] == doc[row]:
            hi += 1
        left, mid, right = (self.decode(tok[lo:row].tolist()), self.decode([int(tok[row])]),
                            self.decode(tok[row + 1:hi + 1].tolist()))
        if mark and mid.strip():
            mid = (" " if mid[:1].isspace() else "") + f"<<{mid.strip()}>>"
        return " ".join((left + mid + right).split())

    def shown_context(self, latent: int) -> str | None:
        """The latent's strongest context, short, the firing token marked: ``…Sure, <<here>> are…``."""
        rows = self.explain.get(latent)
        if rows is None or len(rows) == 0:
            return None
        row = int(rows[0])
        if self.texts is not None:
            text = self.window(row)
            return text[:SHOW_CHARS] + ("…" if len(text) > SHOW_CHARS else "")
        text = self.window(row, SHOW_BEFORE, SHOW_AFTER, mark=True)
        doc = self.codes.doc
        head = row - SHOW_BEFORE > 0 and doc[row - SHOW_BEFORE - 1] == doc[row]
        tail = row + SHOW_AFTER + 1 < len(doc) and doc[row + SHOW_AFTER + 1] == doc[row]
        return ("…" if head else "") + text + ("…" if tail else "")


def _one_per_doc(rows: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """The first row of each document, in the given order."""
    _, first = np.unique(doc[rows], return_index=True)
    return rows[np.sort(first)]


def draw_contexts(codes: TokenCodes, decode: Callable[[list[int]], str], n_explain: int = N_EXPLAIN,
                  max_bank: int = MAX_BANK, n_negative: int = N_NEGATIVE, seed: int = 0,
                  texts: list[str] | None = None) -> Contexts:
    """Explain rows of every latent that fires, the bank of rows to embed (every token, or ``max_bank``
    drawn at random) and the negative pool (``n_negative`` rows of the bank). ``texts``: the
    documents of a document-level SAE, whose codes have one row per document."""
    rng = np.random.default_rng(seed)
    explain: dict[int, np.ndarray] = {}
    for j in np.flatnonzero(codes.counts()):
        rows, vals = codes.firing(int(j))
        explain[int(j)] = _one_per_doc(rows[np.argsort(-vals, kind="stable")], codes.doc)[:n_explain]
    n = codes.n_tokens
    bank = np.arange(n) if n <= max_bank else np.sort(rng.choice(n, size=max_bank, replace=False))
    negatives = np.sort(rng.choice(bank, size=min(n_negative, len(bank)), replace=False))
    return Contexts(codes, explain, bank.astype(np.int64), negatives.astype(np.int64), decode, texts)


def document_codes(mat: Any) -> TokenCodes:
    """Codes of a document-level SAE from its documents × latents matrix (one "token" per document)."""
    coo = mat.tocoo()
    order = np.lexsort((coo.row, coo.col))
    n = mat.shape[0]
    return TokenCodes(np.zeros(n, np.int32), np.arange(n, dtype=np.int32), coo.col[order].astype(np.int32),
                      coo.row[order].astype(np.int64), coo.data[order].astype(np.float32), int(mat.shape[1]))


__all__ = ["TokenCodes", "Contexts", "encode_tokens", "draw_contexts", "document_codes", "BEFORE", "AFTER"]
