"""Torch's intra-op thread count, changed for one block and then restored.

Why restore: ``torch.set_num_threads`` is process-wide. A library call that leaves it changed
(training on ``--threads 1``, embedding a query on one thread) silently changes every later
computation of the process — fp32 matmuls differ in the last bits between thread counts, so a
later encode would no longer reproduce a resumed one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` torch threads (unchanged when ``n`` is None or 0)."""
    import torch

    if not n:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


__all__ = ["torch_threads"]
