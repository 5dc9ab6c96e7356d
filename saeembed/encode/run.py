"""Run the pending shards of an encode: tokenise ahead, forward reader + SAE, pool, write atomically.

Overlap: a background thread tokenises and pads the next shard while the model runs, and another
writes finished shards, so the model is the only thing on the critical path. A shard's batches
depend only on its own documents and the recorded settings, so a resumed run produces exactly the
rows of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import polars as pl
import torch

from ..corpus import Corpus
from ..fsutil import atomic_write_parquet
from ..reader import Reader, Window, batches_by_budget, pad_batch
from ..sae import SparseAutoencoder
from .pool import ACT_SCHEMA, combine_windows, pool_windows
from .progress import EncodeProgress
from .workdir import act_path, docs_path

log = logging.getLogger(__name__)
DOCS_SCHEMA = {"row_idx": pl.Int64, "n_tokens": pl.Int64, "token_ends": pl.List(pl.Int32)}


@dataclass
class ShardWork:
    """One shard, tokenised and batched, ready for the model."""

    shard: int
    row_idx: np.ndarray  # source row of each document in the shard
    windows: list[Window]
    batches: list[tuple[list[Window], torch.Tensor, torch.Tensor, torch.Tensor]]
    n_tokens: np.ndarray  # pooled tokens per document
    token_ends: list[list[int] | None] | None = None  # per document: Reader.token_ends

    @property
    def total_tokens(self) -> int:
        return int(sum(len(w.ids) for w in self.windows))

    def docs_frame(self) -> pl.DataFrame:
        """The shard's per-document file: row_idx, n_tokens and where each pooled token ends in the text."""
        ends = self.token_ends or [None] * len(self.row_idx)
        return pl.DataFrame({"row_idx": self.row_idx.astype(np.int64), "n_tokens": self.n_tokens, "token_ends": ends},
                            schema=DOCS_SCHEMA)


def doc_inputs(corpus: Corpus, rows: slice) -> list[Any]:
    """The documents of ``rows`` as the reader takes them: strings, or lists of chat messages."""
    col = "messages" if corpus.kind == "messages" else "text"
    values = corpus.docs[col][rows].to_list()
    return [json.loads(v) for v in values] if corpus.kind == "messages" else values


PILOT_FRACTION = 4  # the first batch of a shard holds at most batch_tokens / 4 padded tokens


def shard_batches(windows: list[Window], batch_tokens: int) -> list[list[Window]]:
    """The batches of one shard: first a small pilot of median-length windows, then the rest by
    :func:`~saeembed.reader.batches_by_budget`.

    Why a pilot: the progress bar moves, and the size estimate is taken, after the first batch; a
    small batch of typical documents makes both come within seconds and makes the estimate
    representative (length-sorted batches start with the shortest documents). The batches depend only
    on the shard's windows and the budget, so a resumed run, or a Ray worker, computes the same rows.
    """
    order = sorted(range(len(windows)), key=lambda i: (windows[i].start, windows[i].n_computed))
    if not order:
        return []
    cap = max(1, batch_tokens // PILOT_FRACTION)
    mid = len(order) // 2
    lo, hi = mid, mid + 1

    def fits(a: int, b: int) -> bool:
        ws = [windows[i] for i in order[a:b]]
        return len({w.start for w in ws}) == 1 and max(w.n_computed for w in ws) * len(ws) <= cap

    while True:
        if hi < len(order) and fits(lo, hi + 1):
            hi += 1
        elif lo > 0 and fits(lo - 1, hi):
            lo -= 1
        else:
            break
    pilot = set(order[lo:hi])
    rest = [w for i, w in enumerate(windows) if i not in pilot]
    return [[windows[i] for i in order[lo:hi]], *batches_by_budget(rest, batch_tokens)]


def tokenise_shard(reader: Reader, corpus: Corpus, shard: int, shard_docs: int, batch_tokens: int) -> ShardWork:
    rows = slice(shard * shard_docs, min((shard + 1) * shard_docs, corpus.n_docs))
    docs = doc_inputs(corpus, rows)
    windows = [w for i, d in enumerate(docs) for w in reader.windows(d, i)]
    n_tokens = np.zeros(len(docs), dtype=np.int64)
    for w in windows:
        n_tokens[w.doc] += w.n_pooled
    batches = [(b, *pad_batch(b, reader.pad_id)) for b in shard_batches(windows, batch_tokens)]
    row_idx = corpus.docs["row_idx"][rows].to_numpy()
    ends = [reader.token_ends(d) for d in docs]
    # ends that do not cover exactly the pooled tokens would mark the wrong text: keep none
    ends = [e if e is not None and len(e) == n else None for e, n in zip(ends, n_tokens.tolist())]
    return ShardWork(shard, row_idx, windows, batches, n_tokens, ends)


def prefetch(fn: Callable[[int], ShardWork], shards: list[int], depth: int = 2) -> Iterator[ShardWork]:
    """Tokenise upcoming shards in a thread (HF fast tokenisers release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for s in shards:
                if stop.is_set():
                    return
                q.put(fn(s))
        except BaseException as exc:  # noqa: BLE001 - surfaced in the main thread, which re-raises it
            q.put(exc)
            return
        q.put(None)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def encode_shard(reader: Reader, sae: SparseAutoencoder, work: ShardWork,
                 on_batch: Callable[[int, int, int, int], None] | None = None) -> pl.DataFrame:
    """Run one shard through reader and SAE; returns its pooled non-zeros per document.

    ``on_batch(content_tokens, documents_finished, windows, nonzeros)`` is called after each batch.
    """
    parts: list[pl.DataFrame] = []
    left = np.bincount([w.doc for w in work.windows], minlength=len(work.row_idx))  # windows still to run
    for windows, ids, attn, pool in work.batches:
        hidden = reader.hidden_states(ids, attn)
        res = pool_windows(sae, hidden, pool)
        doc_of_row = np.array([w.doc for w in windows], dtype=np.int64)
        offset_of_row = np.array([w.offset for w in windows], dtype=np.int64)
        rows = res["row"].astype(np.int64)
        parts.append(pl.DataFrame({
            "row_idx": work.row_idx[doc_of_row[rows]] if len(rows) else np.zeros(0, np.int64),
            "feature_id": res["feature_id"], "value": res["value"],
            "total": res["total"], "n_active": res["n_active"],
            "peak_pos": res["peak"] + offset_of_row[rows],
        }, schema=ACT_SCHEMA))
        if on_batch:
            np.subtract.at(left, doc_of_row, 1)
            finished = int(np.isin(np.unique(doc_of_row), np.flatnonzero(left == 0)).sum())
            on_batch(int(pool.sum()), finished, len(windows), len(rows))
    return combine_windows(parts)


class _ShardWriter:
    """Writes finished shards in a thread: docs first, acts last (the acts file marks a shard done)."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            shard, docs_df, acts_df = item
            try:
                atomic_write_parquet(docs_df, docs_path(self.work_dir, shard))
                atomic_write_parquet(acts_df, act_path(self.work_dir, shard))
            except BaseException as exc:  # noqa: BLE001 - re-raised by put()/close() in the encoding thread
                self.errors.append(exc)
                return

    def put(self, shard: int, docs_df: pl.DataFrame, acts_df: pl.DataFrame) -> None:
        if self.errors:
            raise self.errors[0]
        self.queue.put((shard, docs_df, acts_df))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.errors:
            raise self.errors[0]


def run_shards(reader: Reader, sae: SparseAutoencoder, corpus: Corpus, work_dir: Path, pending: list[int], *,
               shard_docs: int, batch_tokens: int, done_docs: int, progress: bool,
               size_estimate: Callable[[float], str] | None = None) -> tuple[int, float]:
    """Encode ``pending`` shards into ``work_dir`` with a progress bar on stderr that moves per batch
    (:class:`~saeembed.encode.progress.EncodeProgress`); returns (content tokens encoded, seconds).

    ``size_estimate(nonzeros_per_document)`` gives the line shown after the first batch.
    """
    writer = _ShardWriter(work_dir)
    bar = EncodeProgress(corpus, pending, shard_docs, done_docs, progress, size_estimate)
    try:
        prep = lambda s: tokenise_shard(reader, corpus, s, shard_docs, batch_tokens)  # noqa: E731
        for work in prefetch(prep, pending):
            bar.shard_tokenised(work.shard, int(work.n_tokens.sum()))
            acts = encode_shard(reader, sae, work, bar.batch_done)
            writer.put(work.shard, work.docs_frame(), acts)
    finally:
        bar.close()
        writer.close()
    return bar.tokens_done, bar.seconds


__all__ = ["ShardWork", "tokenise_shard", "shard_batches", "encode_shard", "run_shards", "doc_inputs", "prefetch",
           "DOCS_SCHEMA"]
