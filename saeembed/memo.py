"""Process-wide caches under one set of rules: bounded, thread-safe, built once per key, clearable.

Why one helper: loaded models, the sentence embedder and label embeddings were each cached by a
module of their own, with their own locking and eviction. A :class:`Memo` builds a value once per
key even when threads race for it (the builder runs under a per-key lock), keeps at most
``max_entries`` values (least recently used evicted first) and can be emptied, all at once with
:func:`clear_all` (tests, notebooks that edited labels or swapped a model).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Generic, Hashable, TypeVar

V = TypeVar("V")
_ALL: list[Memo] = []


class Memo(Generic[V]):
    """A bounded LRU of values built by a factory, one build per key."""

    def __init__(self, name: str, max_entries: int) -> None:
        self.name, self.max_entries = name, max_entries
        self._values: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[Hashable, threading.Lock] = {}
        _ALL.append(self)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        return None

    def put(self, key: Hashable, value: V) -> V:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.max_entries:
                self._values.popitem(last=False)
        return value

    def get_or_build(self, key: Hashable, build: Callable[[], V]) -> V:
        hit = self.get(key)
        if hit is not None:
            return hit
        with self._lock:
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:  # a second thread asking for the same key waits for the first build
            hit = self.get(key)
            if hit is None:
                hit = self.put(key, build())
        with self._lock:
            self._building.pop(key, None)
        return hit

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


def clear_all() -> None:
    """Empty every process-wide cache of saeembed."""
    for memo in _ALL:
        memo.clear()


def memo_stats() -> dict[str, Any]:
    return {m.name: len(m) for m in _ALL}


__all__ = ["Memo", "clear_all", "memo_stats"]
