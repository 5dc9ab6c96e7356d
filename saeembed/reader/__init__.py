"""The reader: a Hugging Face model cut after the SAE's layer, turning documents into hidden states.

One job per module: :mod:`.resolve` (which model, where from, device and dtype), :mod:`.windows`
(windows, token-budget batches, padding), :mod:`.prefix` (the shared-prefix key/value cache and
when it is exact), :mod:`.core` (the :class:`Reader`: truncated model, hook, tokenisation),
:mod:`.doc` (:class:`DocReader`: one sentence embedding per document; :func:`make_reader` picks it
for ``MODEL#doc`` / ``minilm-doc`` specs).
"""

from __future__ import annotations

from .core import SENTINEL, Reader
from .doc import DocReader, make_reader
from .resolve import (
    DEFAULT_READER,
    DOC_READER,
    READER_ALIASES,
    cache_dir,
    is_doc_reader,
    pick_device,
    pick_dtype,
    resolve_reader,
)
from .windows import Window, batches_by_budget, pad_batch

__all__ = ["Reader", "DocReader", "make_reader", "is_doc_reader", "DOC_READER", "Window", "batches_by_budget",
           "pad_batch", "resolve_reader", "pick_device", "pick_dtype", "cache_dir", "DEFAULT_READER", "READER_ALIASES",
           "SENTINEL"]
