"""The LLM options shared by ``saeembed label`` and ``saeembed diff --hypotheses`` (light module)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option


@dataclass
class LLMOptions:
    """Which LLM answers, and how patiently."""

    llm_backend: str = option("openai", "openai: any OpenAI-compatible endpoint (OpenAI, OpenRouter, vLLM, Ollama); "
                                        "local: a transformers chat model in-process", choices=("openai", "local"))
    llm_model: str | None = option(None, "model name at the endpoint, or (local) a model path / hub id (default "
                                         "local: SmolLM2-135M-Instruct)", envvar="SAEEMBED_LLM_MODEL")
    base_url: str | None = option(None, "endpoint base URL, e.g. http://localhost:11434/v1 (or SAEEMBED_LLM_BASE_URL)",
                                  envvar="SAEEMBED_LLM_BASE_URL")
    api_key: str | None = option(None, "deprecated: visible in ps and shell history; use SAEEMBED_LLM_API_KEY, "
                                       "OPENAI_API_KEY or `saeembed keys set`", hidden=True)
    cache_path: str | None = option(None, "LLM response cache file (default: the cache folder's "
                                          "llm/completions.sqlite)", "--cache", metavar="FILE")
    no_cache: bool = option(False, "always call the LLM (neither read nor write the response cache)")
    timeout: float = option(60.0, "seconds to wait for one LLM answer (a silent endpoint is given up after two)",
                            min=0.0, min_open=True)
    workers: int = option(4, "concurrent LLM requests", min=1)
    max_retries: int = option(5, "retries on HTTP 429/5xx answers", min=0)


__all__ = ["LLMOptions"]
