"""The reader: a Hugging Face model cut after the SAE's layer, turning documents into hidden states.

One job per module: :mod:`.resolve` (which model, where from, device and dtype), :mod:`.windows`
(windows, token-budget batches, padding), :mod:`.prefix` (the shared-prefix key/value cache and
when it is exact), :mod:`.core` (the :class:`Reader`: truncated model, hook, tokenisation).
"""

from __future__ import annotations

from .core import SENTINEL, Reader
from .resolve import DEFAULT_READER, READER_ALIASES, cache_dir, pick_device, pick_dtype, resolve_reader
from .windows import Window, batches_by_budget, pad_batch

__all__ = ["Reader", "Window", "batches_by_budget", "pad_batch", "resolve_reader", "pick_device", "pick_dtype",
           "cache_dir", "DEFAULT_READER", "READER_ALIASES", "SENTINEL"]
