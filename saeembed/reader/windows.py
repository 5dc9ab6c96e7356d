"""Windows (one model input each), token-budget batching and padding.

A window keeps the whole token sequence of (a piece of) a document, ``ids``, with ``pool``
marking the positions whose latents are pooled. Only ``ids[start:stop]`` is computed:

- ``start`` leading tokens are the reader's shared template prefix (system prompt and role
  header, or a BOS), whose key/value states the reader computes once and reuses for every batch;
- tokens from ``stop`` on come after the last pooled token. In a causal reader they cannot change
  an earlier token's hidden state, and they are never pooled, so they are not run.

Both cuts are exact (see :mod:`.prefix`). ``start = 0, stop = len(ids)`` is the full forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch


@dataclass
class Window:
    """One model input: ``ids`` with ``pool`` marking the positions whose latents are pooled;
    ``ids[start:stop]`` is what the model computes (``stop=None``: to the end); ``offset`` counts the
    document's pooled tokens in the windows before this one (a pooled token's position in its document
    is ``offset`` plus its rank among this window's pooled tokens)."""

    doc: int
    ids: list[int]
    pool: list[bool]
    start: int = 0
    stop: int | None = None
    offset: int = 0

    @property
    def n_pooled(self) -> int:
        return sum(self.pool)

    @property
    def end(self) -> int:
        return len(self.ids) if self.stop is None else self.stop

    @property
    def n_computed(self) -> int:
        return self.end - self.start


PADDING_SLACK = 0.15  # a batch closes when padding would exceed 15 % of its real tokens ...
MIN_BATCH_FRACTION = 8  # ... unless it holds under token_budget / 8 (CPU throughput is flat from 512 tokens on)


def batches_by_budget(windows: Sequence[Window], token_budget: int, padding_slack: float = PADDING_SLACK,
                      min_batch_tokens: int | None = None) -> Iterator[list[Window]]:
    """Length-sorted batches whose padded computed size (rows × longest) stays within ``token_budget``.

    A batch also closes once its padding would exceed ``padding_slack`` × its real tokens (and it
    holds at least ``min_batch_tokens``, default ``token_budget // 8``): with the template prefix
    cached and the closing tokens skipped, short documents vary relatively more in length, and a
    256-comment GoEmotions shard in budget-sized batches was 1.76× padding (1.14× with the limit).
    Windows after different cached prefixes never share a batch.
    """
    floor = token_budget // MIN_BATCH_FRACTION if min_batch_tokens is None else min_batch_tokens
    order = sorted(windows, key=lambda w: (w.start, w.n_computed))
    batch: list[Window] = []
    real = 0
    for w in order:
        longest = max(w.n_computed, batch[-1].n_computed if batch else 0)
        padded = longest * (len(batch) + 1)
        if batch and (w.start != batch[-1].start or padded > token_budget
                      or (padded > (1 + padding_slack) * (real + w.n_computed)
                          and longest * len(batch) >= floor)):
            yield batch
            batch, real = [], 0
        batch.append(w)
        real += w.n_computed
    if batch:
        yield batch


def pad_batch(batch: Iterable[Window], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and pooling mask of the computed part of each window.

    ``ids`` and ``pool`` are ``[rows, longest computed]``; the attention mask also covers the
    cached prefix in front, ``[rows, start + longest]`` (what a model given a key/value cache
    expects), so ``attn.shape[1] - ids.shape[1]`` tells :meth:`Reader.hidden_states` how many
    cached prefix tokens precede every row.
    """
    batch = list(batch)
    start = batch[0].start
    if any(w.start != start for w in batch):
        raise ValueError("windows after different cached prefixes cannot share a batch; use batches_by_budget")
    longest = max(w.n_computed for w in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), start + longest), dtype=torch.long)
    attn[:, :start] = 1
    pool = torch.zeros((len(batch), longest), dtype=torch.bool)
    for i, w in enumerate(batch):
        n = w.n_computed
        ids[i, :n] = torch.tensor(w.ids[w.start:w.end], dtype=torch.long)
        attn[i, start:start + n] = 1
        pool[i, :n] = torch.tensor(w.pool[w.start:w.end], dtype=torch.bool)
    return ids, attn, pool


__all__ = ["Window", "batches_by_budget", "pad_batch"]
