"""What an LLM call returns and what a run of calls cost."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

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


__all__ = ["Completion", "Usage", "Messages"]
