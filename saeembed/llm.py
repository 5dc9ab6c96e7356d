"""LLM backends for labelling: any OpenAI-compatible chat endpoint, or a local transformers model.

- :class:`OpenAIChat` speaks ``POST {base_url}/chat/completions`` (OpenAI, OpenRouter, vLLM,
  Ollama, llama.cpp server...) with the standard library only, so no SDK is required. 429, 5xx,
  connection errors and time-outs are retried with exponential backoff (honouring
  ``Retry-After``); other HTTP errors fail at once with the server's message.
- :class:`LocalChat` runs a transformers chat model in-process (greedy unless a temperature is
  given), e.g. the shipped SmolLM2-135M-Instruct, so labelling works offline.
- :class:`LLM` wraps either with an on-disk cache (sqlite, keyed by backend + model + request
  hash) so a re-run costs nothing, thread-pool fan-out, and token accounting.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import UserError

Messages = list[dict[str, str]]


@dataclass
class Completion:
    """One chat completion with the tokens it cost (0 when served from the cache)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    seconds: float = 0.0


@dataclass
class Usage:
    """Totals over a run, printed at the end so users see what labelling cost."""

    calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, c: Completion) -> None:
        with self.lock:
            self.calls += 1
            self.cached += int(c.cached)
            self.prompt_tokens += c.prompt_tokens
            self.completion_tokens += c.completion_tokens
            self.seconds += c.seconds

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("calls", "cached", "prompt_tokens", "completion_tokens",
                                              "seconds", "retries")}

    def summary(self) -> str:
        return (f"LLM usage: {self.calls} calls ({self.cached} from cache), {self.prompt_tokens} prompt + "
                f"{self.completion_tokens} completion tokens, {self.retries} retries, "
                f"{self.seconds:.1f} s in uncached calls")


class OpenAIChat:
    """An OpenAI-compatible chat-completions endpoint, stdlib only."""

    backend = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 5, backoff: float = 1.0,
                 on_retry: Callable[[], None] | None = None) -> None:
        self.model = model
        self.base_url = (base_url or os.environ.get("SAEEMBED_LLM_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key or os.environ.get("SAEEMBED_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.on_retry = on_retry

    @property
    def endpoint(self) -> str:
        return self.base_url + "/chat/completions"

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read().decode())

    def complete(self, messages: Messages, max_tokens: int = 128, temperature: float = 0.0) -> Completion:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        attempt = 0
        t0 = time.perf_counter()
        while True:
            wait = None
            try:
                data = self._post(body)
                break
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:200] if exc.fp else ""
                if exc.code == 429 or exc.code >= 500:
                    why = f"HTTP {exc.code}"
                    ra = exc.headers.get("Retry-After") if exc.headers else None
                    try:
                        wait = min(float(ra), 60.0) if ra else None
                    except ValueError:
                        wait = None
                elif exc.code in (401, 403):
                    raise UserError(f"the LLM endpoint {self.endpoint} refused the API key (HTTP {exc.code}); set "
                                    "--api-key or SAEEMBED_LLM_API_KEY / OPENAI_API_KEY") from None
                else:
                    raise UserError(f"the LLM endpoint {self.endpoint} answered HTTP {exc.code}: "
                                    f"{' '.join(detail.split())}; check --llm-model and --base-url") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                why = f"{type(exc).__name__}: {reason}"
                if isinstance(reason, ConnectionRefusedError) and attempt >= 1:
                    raise UserError(f"nothing is listening at the LLM endpoint {self.endpoint} (connection refused); "
                                    "check --base-url or start the server") from None
                if isinstance(reason, (TimeoutError, socket.timeout)) or isinstance(exc, TimeoutError):
                    if attempt >= 1:  # a server that stays silent twice will not answer a third time
                        raise UserError(f"the LLM endpoint {self.endpoint} did not answer within {self.timeout:g} s, "
                                        "twice; raise --timeout for slow models or check the server") from None
                    why = f"no answer within {self.timeout:g} s"
            attempt += 1
            if attempt > self.max_retries:
                raise UserError(f"the LLM endpoint {self.endpoint} failed {attempt} times (last: {why}); check "
                                "--base-url, or retry later") from None
            if self.on_retry:
                self.on_retry()
            delay = wait if wait is not None else self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random())
            time.sleep(delay)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UserError(f"the LLM endpoint {self.endpoint} returned no choices ({str(data)[:120]}); is it an "
                            "OpenAI-compatible chat-completions API?") from None
        usage = data.get("usage") or {}
        return Completion(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                          seconds=time.perf_counter() - t0)


class LocalChat:
    """A transformers chat model run in-process; one generation at a time (it already uses all cores)."""

    backend = "local"

    def __init__(self, model: str | None = None, device: str = "auto") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .reader import pick_device, resolve_reader

        name, load_from = resolve_reader(model)
        self.model = name
        self.device = pick_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(load_from)
            self.lm = AutoModelForCausalLM.from_pretrained(load_from, dtype="auto").to(self.device).eval()
        except OSError as exc:
            raise UserError(f"cannot load local LLM {name!r} ({str(exc).splitlines()[0][:120]}); pass a local "
                            "model directory or a cached hub id to --llm-model") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"local LLM {name!r} has no chat template; use an instruction-tuned chat model")
        self._lock = threading.Lock()

    def complete(self, messages: Messages, max_tokens: int = 128, temperature: float = 0.0) -> Completion:
        import torch

        t0 = time.perf_counter()
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        ids = {k: v.to(self.device) for k, v in ids.items()}
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": self.tokenizer.eos_token_id}
        kwargs.update({"do_sample": True, "temperature": temperature} if temperature > 0 else
                      {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
        with self._lock, torch.inference_mode():
            out = self.lm.generate(**ids, **kwargs)
        n_in = ids["input_ids"].shape[1]
        new = out[0, n_in:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Completion(text, int(n_in), int(new.shape[0]), seconds=time.perf_counter() - t0)


def default_cache_path() -> Path:
    from .reader import cache_dir

    return cache_dir() / "llm" / "completions.sqlite"


class LLM:
    """A backend plus a persistent response cache, concurrency and usage accounting."""

    def __init__(self, backend: OpenAIChat | LocalChat, cache: str | Path | None = None, use_cache: bool = True,
                 workers: int = 4) -> None:
        self.backend = backend
        self.usage = Usage()
        self.workers = max(1, int(workers))
        if isinstance(backend, OpenAIChat) and backend.on_retry is None:
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
        if isinstance(self.backend, OpenAIChat):
            ident["base_url"] = self.backend.base_url
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def complete(self, messages: Messages, max_tokens: int = 128, temperature: float = 0.0) -> Completion:
        key = self.key(messages, max_tokens, temperature)
        if self._db is not None:
            with self._db_lock:
                row = self._db.execute("SELECT text FROM completions WHERE key = ?", [key]).fetchone()
            if row is not None:
                c = Completion(row[0], cached=True)
                self.usage.add(c)
                return c
        c = self.backend.complete(messages, max_tokens=max_tokens, temperature=temperature)
        if self._db is not None:
            with self._db_lock:
                self._db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?)",
                                 [key, c.text, c.prompt_tokens, c.completion_tokens, time.time()])
                self._db.commit()
        self.usage.add(c)
        return c

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


def report_usage(llm: LLM) -> None:
    print(llm.usage.summary(), file=sys.stderr)


__all__ = ["Completion", "Usage", "OpenAIChat", "LocalChat", "LLM", "make_llm", "report_usage"]
