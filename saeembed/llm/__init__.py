"""LLM backends for labelling and diff hypotheses: any OpenAI-compatible endpoint (:mod:`.http`) or a
local transformers chat model (:mod:`.local`), wrapped by :class:`LLM` with an on-disk response
cache (sqlite, keyed by backend + model + request hash, so a re-run costs nothing), thread-pool
fan-out and token accounting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import UserError
from ..paths import cache_path
from .http import OpenAIChat
from .local import LocalChat
from .options import LLMOptions
from .types import Completion, Messages, Usage

if TYPE_CHECKING:
    from .http import OpenAIChat
    from .local import LocalChat


def __getattr__(name: str) -> Any:  # httpx and transformers load on first use
    if name == "OpenAIChat":
        from .http import OpenAIChat

        return OpenAIChat
    if name == "LocalChat":
        from .local import LocalChat

        return LocalChat
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

log = logging.getLogger(__name__)


def default_cache_path() -> Path:
    return cache_path("llm", "completions.sqlite")


class LLM:
    """A backend plus a persistent response cache, concurrency and usage accounting."""

    def __init__(self, backend: OpenAIChat | LocalChat, cache: str | Path | None = None, use_cache: bool = True,
                 workers: int = 4) -> None:
        self.backend = backend
        self.usage = Usage()
        self.workers = max(1, int(workers))
        if getattr(backend, "backend", "") == "openai" and backend.on_retry is None:
            backend.on_retry = self._count_retry
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()
        if use_cache:
            path = Path(cache) if cache else default_cache_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, text TEXT, "
                             "prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)")
            self._db.commit()

    def _count_retry(self) -> None:
        with self.usage.lock:
            self.usage.retries += 1

    @property
    def name(self) -> str:
        """What labels record as their source: ``llm:<model>``."""
        return self.backend.model

    def key(self, messages: Messages, max_tokens: int, temperature: float) -> str:
        ident = {"backend": self.backend.backend, "model": self.backend.model, "messages": messages,
                 "max_tokens": max_tokens, "temperature": temperature}
        if getattr(self.backend, "backend", "") == "openai":
            ident["base_url"] = self.backend.base_url
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def complete(self, messages: Messages, max_tokens: int = 128, temperature: float = 0.0) -> Completion:
        return self._cached(self.key(messages, max_tokens, temperature),
                            lambda: self.backend.complete(messages, max_tokens=max_tokens, temperature=temperature))

    def _cached(self, key: str, call: Callable[[], Completion]) -> Completion:
        """The cached answer for ``key``, else ``call()``'s (then stored); usage counted either way."""
        if self._db is not None:
            with self._db_lock:
                row = self._db.execute("SELECT text FROM completions WHERE key = ?", [key]).fetchone()
            if row is not None:
                c = Completion(row[0], cached=True)
                self.usage.add(c)
                return c
        c = call()
        if self._db is not None:
            with self._db_lock:
                self._db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?)",
                                 [key, c.text, c.prompt_tokens, c.completion_tokens, time.time()])
                self._db.commit()
        self.usage.add(c)
        return c

    @property
    def continues_text(self) -> bool:
        """Whether the backend can continue raw text (a local model; endpoints only chat)."""
        return hasattr(self.backend, "continue_text")

    def continue_text(self, prefix: str, max_tokens: int = 16) -> Completion:
        """The backend's greedy continuation of ``prefix`` (no chat template), cached like :meth:`complete`."""
        return self._cached(self.key([{"role": "raw", "content": prefix}], max_tokens, 0.0),
                            lambda: self.backend.continue_text(prefix, max_tokens=max_tokens))

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """Run ``fn`` over ``items`` in the thread pool (order kept); network waits overlap."""
        if self.workers == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(fn, items))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if hasattr(self.backend, "close"):
            self.backend.close()



def make_llm(backend: str = "openai", model: str | None = None, base_url: str | None = None,
             api_key: str | None = None, cache: str | Path | None = None, use_cache: bool = True,
             workers: int = 4, timeout: float = 60.0, max_retries: int = 5, backoff: float = 1.0) -> LLM:
    """Build an :class:`LLM` from CLI-style options."""
    if backend == "local":
        return LLM(LocalChat(model), cache=cache, use_cache=use_cache, workers=1)
    if backend != "openai":
        raise UserError(f"unknown LLM backend {backend!r}; use openai (any compatible endpoint) or local")
    model = model or os.environ.get("SAEEMBED_LLM_MODEL")
    if not model:
        raise UserError("no LLM model given; pass --llm-model (e.g. gpt-4o-mini) or set SAEEMBED_LLM_MODEL")
    return LLM(OpenAIChat(model, base_url, api_key, timeout=timeout, max_retries=max_retries, backoff=backoff),
               cache=cache, use_cache=use_cache, workers=workers)


def llm_from_options(o: LLMOptions) -> LLM:
    """The :class:`LLM` that ``--llm-backend``, ``--llm-model``, ``--base-url`` … describe."""
    if o.api_key:
        log.warning("warning: --api-key is visible in ps and shell history; prefer SAEEMBED_LLM_API_KEY or "
                    "`saeembed keys set`")
    return make_llm(o.llm_backend, o.llm_model, base_url=o.base_url, api_key=o.api_key, cache=o.cache_path,
                    use_cache=not o.no_cache, workers=o.workers, timeout=o.timeout, max_retries=o.max_retries)


def report_usage(llm: LLM) -> None:
    log.info(llm.usage.summary())


__all__ = ["Completion", "Usage", "Messages", "OpenAIChat", "LocalChat", "LLM", "LLMOptions", "make_llm",
           "llm_from_options", "report_usage", "default_cache_path"]
