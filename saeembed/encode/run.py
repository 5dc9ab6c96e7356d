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
import sys
import threading
import time
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
from .workdir import act_path, docs_path

log = logging.getLogger(__name__)


@dataclass
class ShardWork:
    """One shard, tokenised and batched, ready for the model."""

    shard: int
    row_idx: np.ndarray  # source row of each document in the shard
    windows: list[Window]
    batches: list[tuple[list[Window], torch.Tensor, torch.Tensor, torch.Tensor]]
    n_tokens: np.ndarray  # pooled tokens per document

    @property
    def total_tokens(self) -> int:
        return int(sum(len(w.ids) for w in self.windows))


def doc_inputs(corpus: Corpus, rows: slice) -> list[Any]:
    """The documents of ``rows`` as the reader takes them: strings, or lists of chat messages."""
    col = "messages" if corpus.kind == "messages" else "text"
    values = corpus.docs[col][rows].to_list()
    return [json.loads(v) for v in values] if corpus.kind == "messages" else values


def tokenise_shard(reader: Reader, corpus: Corpus, shard: int, shard_docs: int, batch_tokens: int) -> ShardWork:
    rows = slice(shard * shard_docs, min((shard + 1) * shard_docs, corpus.n_docs))
    docs = doc_inputs(corpus, rows)
    windows = [w for i, d in enumerate(docs) for w in reader.windows(d, i)]
    n_tokens = np.zeros(len(docs), dtype=np.int64)
    for w in windows:
        n_tokens[w.doc] += w.n_pooled
    batches = [(b, *pad_batch(b, reader.pad_id)) for b in batches_by_budget(windows, batch_tokens)]
    row_idx = corpus.docs["row_idx"][rows].to_numpy()
    return ShardWork(shard, row_idx, windows, batches, n_tokens)


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
                 on_batch: Callable[[int], None] | None = None) -> pl.DataFrame:
    """Run one shard through reader and SAE; returns its pooled non-zeros per document."""
    parts: list[pl.DataFrame] = []
    for windows, ids, attn, pool in work.batches:
        hidden = reader.hidden_states(ids, attn)
        res = pool_windows(sae, hidden, pool)
        doc_of_row = np.array([w.doc for w in windows], dtype=np.int64)
        parts.append(pl.DataFrame({
            "row_idx": work.row_idx[doc_of_row[res["row"]]] if len(res["row"]) else np.zeros(0, np.int64),
            "feature_id": res["feature_id"], "value": res["value"],
            "total": res["total"], "n_active": res["n_active"],
        }, schema=ACT_SCHEMA))
        if on_batch:
            on_batch(int(attn.sum()))
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
               on_first_shard: Callable[[int, int], str] | None = None) -> None:
    """Encode ``pending`` shards into ``work_dir`` with a progress bar (docs, tok/s, ETA).

    ``on_first_shard(n_docs, n_nonzeros)`` is called once with the first finished shard and returns
    a line to show (the size estimate), so no pilot batch is computed and thrown away.
    """
    from tqdm import tqdm

    writer = _ShardWriter(work_dir)
    bar = tqdm(total=corpus.n_docs, initial=done_docs, unit="doc", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    tokens, t0 = 0, time.perf_counter()

    def on_batch(n: int) -> None:
        nonlocal tokens
        tokens += n
        bar.set_postfix_str(f"{tokens / max(time.perf_counter() - t0, 1e-9):,.0f} tok/s", refresh=False)

    try:
        prep = lambda s: tokenise_shard(reader, corpus, s, shard_docs, batch_tokens)  # noqa: E731
        for work in prefetch(prep, pending):
            acts = encode_shard(reader, sae, work, on_batch)
            writer.put(work.shard, pl.DataFrame({"row_idx": work.row_idx.astype(np.int64),
                                                 "n_tokens": work.n_tokens}), acts)
            bar.update(len(work.row_idx))
            if on_first_shard is not None:
                line = on_first_shard(len(work.row_idx), acts.height)
                with tqdm.external_write_mode(file=sys.stderr):
                    log.info(line)
                on_first_shard = None
    finally:
        bar.close()
        writer.close()


__all__ = ["ShardWork", "tokenise_shard", "encode_shard", "run_shards", "doc_inputs", "prefetch"]
