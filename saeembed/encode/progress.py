"""The progress of an encode on stderr: a bar that moves per batch, the size estimate, the summary.

The bar counts content tokens, the unit the reader's time goes into, so its rate (tok/s) and ETA
hold from the first batch on, whatever the documents' lengths; documents done are shown beside it.
Shards not tokenised yet are counted from their characters at the tokens-per-character ratio of
those that are (English text starts at 1 token per 4 characters), so the total firms up as the
run goes. The first batch of every shard is a small one of median-length windows
(:func:`saeembed.encode.run.shard_batches`): the bar moves within seconds, and the non-zeros of
that batch give the size estimate before the rest of the work.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

TOKENS_PER_CHAR = 0.25  # until a shard is tokenised: a typical English BPE ratio
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tokens{postfix} [{elapsed}<{remaining}, {rate_fmt}]"


def doc_chars(corpus: Any) -> np.ndarray:
    """Characters of each document of ``corpus`` (its text, or a chat's JSON), in row order."""
    col = "messages" if corpus.kind == "messages" else "text"
    return corpus.docs[col].str.len_chars().fill_null(0).to_numpy().astype(np.int64)


class EncodeProgress:
    """Tokens and documents done over the pending shards, with the size estimate after the first batch.

    ``size_estimate(nonzeros_per_doc)`` returns the line to show once the first batch is done (None:
    no estimate). Updates come from the encoding thread only.
    """

    def __init__(self, corpus: Any, pending: list[int], shard_docs: int, done_docs: int, enabled: bool,
                 size_estimate: Callable[[float], str] | None = None) -> None:
        from tqdm import tqdm

        chars = doc_chars(corpus)
        self._chars = {s: int(chars[s * shard_docs:(s + 1) * shard_docs].sum()) for s in pending}
        self._tokens: dict[int, int] = {}
        self.n_docs, self.docs_done = corpus.n_docs, done_docs
        self.tokens_done, self.started = 0, time.perf_counter()
        self._size_estimate = size_estimate
        self.bar = tqdm(total=self._estimate(), unit="tok", unit_scale=True, disable=not enabled, file=sys.stderr,
                        dynamic_ncols=True, smoothing=0.1, desc="encoding", bar_format=BAR_FORMAT,
                        mininterval=0, miniters=1)  # every batch redraws: a batch is the unit of progress
        self._show_docs()

    def _estimate(self) -> int:
        known_chars = sum(self._chars[s] for s in self._tokens)
        ratio = sum(self._tokens.values()) / known_chars if known_chars else TOKENS_PER_CHAR
        return int(sum(self._tokens.values()) + ratio * sum(c for s, c in self._chars.items() if s not in self._tokens))

    def _show_docs(self) -> None:
        self.bar.set_postfix_str(f"{self.docs_done:,}/{self.n_docs:,} docs", refresh=False)

    def shard_tokenised(self, shard: int, n_tokens: int) -> None:
        """A shard's exact token count replaces its estimate (and sharpens the others')."""
        self._tokens[shard] = int(n_tokens)
        self.bar.total = max(self._estimate(), self.bar.n)
        self.bar.refresh()

    def batch_done(self, n_tokens: int, docs_finished: int, windows: int, nonzeros: int) -> None:
        """One forward batch: ``n_tokens`` content tokens, ``docs_finished`` documents completed."""
        self.tokens_done += n_tokens
        self.docs_done += docs_finished
        self._show_docs()
        self.bar.update(n_tokens)
        if self._size_estimate is not None and windows:
            line = self._size_estimate(nonzeros / windows)
            self._size_estimate = None
            from tqdm import tqdm

            with tqdm.external_write_mode(file=sys.stderr):
                log.info(line)

    def close(self) -> None:
        self.bar.close()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started



def store_bytes(store_path: Path) -> int:
    """The store file's size with its write-ahead log (0 before it exists)."""
    return sum(p.stat().st_size for p in (Path(store_path), Path(f"{store_path}.wal")) if p.exists())


def summary_line(name: str, row: dict[str, Any], tokens: int, seconds: float, grew: int, store_path: Any) -> str:
    """The one line an encode ends with: what was stored, how fast, and what it cost on disk."""
    rate = f", {tokens / seconds:,.0f} tok/s" if tokens and seconds > 0 else ""
    took = f" in {_duration(seconds)}{rate}" if tokens else ""
    return (f"stored {name!r}: {row['n_docs']:,} documents, {row['n_tokens']:,} tokens{took}; the store grew by "
            f"{grew / 1e6:.1f} MB ({store_path})")


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s} s" if m else f"{seconds:.1f} s"


__all__ = ["EncodeProgress", "doc_chars", "TOKENS_PER_CHAR"]
