"""Any OpenAI-compatible chat-completions endpoint (OpenAI, OpenRouter, vLLM, Ollama, llama.cpp server).

httpx keeps one connection alive across calls; tenacity decides retries:

- HTTP 429 and 5xx are retried up to ``max_retries`` times, waiting what ``Retry-After`` asks
  (capped at 60 s) or an exponential backoff with jitter;
- a refused connection or a silent server (``timeout`` s without an answer) is retried once,
  quickly, then given up with one line: retrying a dead endpoint for minutes helps nobody;
- 401/403 and other 4xx fail at once with the server's message — except the "unsupported
  parameter" answer of reasoning models (they reject ``max_tokens``/``temperature``), after which the
  request is sent again with ``max_completion_tokens`` and without ``temperature``, and the client
  remembers that for the rest of the run.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Callable

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from ..errors import UserError
from .keys import resolve_api_key, resolve_base_url
from .types import Completion, Messages

MAX_RETRY_AFTER_S = 60.0


class _RetryableError(Exception):
    """A failure worth another attempt; ``kind`` decides how many and how long to wait."""

    def __init__(self, kind: str, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.kind, self.why, self.retry_after = kind, why, retry_after


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None


def _unsupported_parameter(detail: str) -> bool:
    low = detail.lower()
    return ("max_tokens" in low or "temperature" in low) and ("unsupported" in low or "not supported" in low)


class OpenAIChat:
    """``POST {base_url}/chat/completions`` with keep-alive, bounded retries and clear errors."""

    backend = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 5, backoff: float = 1.0,
                 on_retry: Callable[[], None] | None = None) -> None:
        self.model = model
        self.base_url = resolve_base_url(base_url)
        self.api_key = resolve_api_key(api_key, self.base_url)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.on_retry = on_retry
        self.reasoning_style = False  # set after a server rejected max_tokens/temperature
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)))

    @property
    def endpoint(self) -> str:
        return self.base_url + "/chat/completions"

    def close(self) -> None:
        self._http.close()

    def _body(self, messages: Messages, max_tokens: int, temperature: float) -> dict[str, Any]:
        if self.reasoning_style:
            return {"model": self.model, "messages": messages, "max_completion_tokens": max_tokens}
        return {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}

    def _post_once(self, messages: Messages, max_tokens: int, temperature: float) -> dict[str, Any]:
        try:
            resp = self._http.post(self.endpoint, json=self._body(messages, max_tokens, temperature))
        except httpx.ConnectError as exc:
            raise _RetryableError("connect", f"cannot connect ({exc})") from None
        except httpx.TimeoutException:
            raise _RetryableError("timeout", f"no answer within {self.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise _RetryableError("status", f"{type(exc).__name__}: {exc}") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _RetryableError("status", f"HTTP {resp.status_code}", _retry_after(resp))
        detail = " ".join(resp.text[:300].split())
        if resp.status_code in (401, 403):
            raise UserError(f"the LLM endpoint {self.endpoint} refused the API key (HTTP {resp.status_code}); set "
                            "SAEEMBED_LLM_API_KEY / OPENAI_API_KEY or run `saeembed keys set`")
        if resp.status_code == 400 and not self.reasoning_style and _unsupported_parameter(detail):
            self.reasoning_style = True
            raise _RetryableError("reasoning", "the model rejects max_tokens/temperature")
        if resp.status_code >= 400:
            raise UserError(f"the LLM endpoint {self.endpoint} answered HTTP {resp.status_code}: {detail}; check "
                            "--llm-model and --base-url")
        try:
            return resp.json()
        except json.JSONDecodeError:
            raise UserError(f"the LLM endpoint {self.endpoint} answered with something that is not JSON "
                            f"({detail[:80]}); is it an OpenAI-compatible chat-completions API?") from None

    # -- retry policy -------------------------------------------------------------------------
    def _stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if not isinstance(exc, _RetryableError):
            return True
        limit = {"connect": 1, "timeout": 1, "reasoning": 1}.get(exc.kind, self.max_retries)
        return state.attempt_number > limit

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RetryableError):
            if exc.retry_after is not None:
                return exc.retry_after
            if exc.kind in ("connect", "timeout", "reasoning"):
                return min(0.2, self.backoff)  # one quick retry
        return self.backoff * (2 ** (state.attempt_number - 1)) * (0.5 + random.random())

    def _count(self, state: RetryCallState) -> None:
        if self.on_retry:
            self.on_retry()

    def _give_up(self, exc: _RetryableError, attempts: int) -> UserError:
        if exc.kind == "connect":
            return UserError(f"nothing is listening at the LLM endpoint {self.endpoint} (connection refused); "
                             "check --base-url or start the server")
        if exc.kind == "timeout":
            return UserError(f"the LLM endpoint {self.endpoint} did not answer within {self.timeout:g} s, twice; "
                             "raise --timeout for slow models or check the server")
        return UserError(f"the LLM endpoint {self.endpoint} failed {attempts} times (last: {exc.why}); check "
                         "--base-url, or retry later")

    def complete(self, messages: Messages, max_tokens: int = 128, temperature: float = 0.0) -> Completion:
        t0 = time.perf_counter()
        retrying = Retrying(stop=self._stop, wait=self._wait, retry=retry_if_exception_type(_RetryableError),
                            before_sleep=self._count, reraise=True)
        try:
            data = retrying(self._post_once, messages, max_tokens, temperature)
        except _RetryableError as exc:
            raise self._give_up(exc, retrying.statistics.get("attempt_number", 1)) from None
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UserError(f"the LLM endpoint {self.endpoint} returned no choices ({str(data)[:120]}); is it an "
                            "OpenAI-compatible chat-completions API?") from None
        usage = data.get("usage") or {}
        return Completion(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                          seconds=time.perf_counter() - t0)


__all__ = ["OpenAIChat"]
