"""The shared-prefix key/value cache of a causal reader, and when it may be used.

With a chat template every document starts with the same tokens (SmolLM2: 25 tokens of system
prompt and ``<|im_start|>assistant\\n``); a BOS-only reader starts every document with its BOS. In a
causal model those tokens' keys and values at each block do not depend on what follows, so they
are computed once per reader (:meth:`PrefixCache.compute`) and expanded over the rows of every
batch (:meth:`PrefixCache.for_batch`); the batch then runs only its own tokens, with position ids
continuing after the prefix and an attention mask covering prefix + padded suffix.

When it is used (:func:`prefix_cache_support`): the kept blocks' attention is causal (every
attention module says ``is_causal``), every kept layer is full attention (no sliding window, whose
cache drops old keys), and the model's forward takes a cache (``cache`` in transformers ≥ 5,
``past_key_values`` before). The reader then checks on probe documents that the cached path
reproduces the full forward (:func:`max_relative_error`) and falls back to the full forward,
with a warning, where it does not.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

# per-token ‖cached − full‖ / ‖full‖ accepted by the reader's self-check, by dtype
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
HALF_TOLERANCE = 5e-2  # bf16/fp16: rounding of an 8-bit mantissa over a dozen blocks


def cache_kwarg(model: nn.Module) -> str | None:
    """The name under which this model's forward takes a key/value cache (None: it takes none)."""
    params = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def is_causal(blocks: nn.ModuleList) -> bool:
    """True when every attention module in ``blocks`` declares causal attention (and some do)."""
    flags = [m.is_causal for m in blocks.modules() if isinstance(getattr(m, "is_causal", None), bool)]
    return bool(flags) and all(flags)


def full_attention_only(config: Any, n_layers: int) -> bool:
    """True when the first ``n_layers`` layers all attend over the whole sequence."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = getattr(cfg, "layer_types", None)
    if types is not None:
        return all(t == "full_attention" for t in list(types)[:n_layers])
    window = getattr(cfg, "sliding_window", None)
    return window is None or getattr(cfg, "use_sliding_window", True) is False


def prefix_cache_support(model: nn.Module, blocks: nn.ModuleList, n_layers: int) -> tuple[bool, str]:
    """(supported, why not) for the shared-prefix cache and suffix skipping on this model."""
    if not is_causal(blocks):
        return False, "its attention is not causal (an encoder)"
    if not full_attention_only(model.config, n_layers):
        return False, "it has sliding-window or chunked attention layers"
    if cache_kwarg(model) is None:
        return False, "its forward takes no key/value cache"
    return True, ""


def new_cache(config: Any) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=config)
    except TypeError:  # transformers < 4.56: no config argument
        return DynamicCache()


class PrefixCache:
    """Keys and values of one token prefix at blocks ``0..layer``, for a batch of 1."""

    def __init__(self, ids: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]], config: Any) -> None:
        self.ids = list(ids)
        self.layers = layers
        self.config = config

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_cache(cls, ids: list[int], cache: Any, n_layers: int, config: Any) -> PrefixCache:
        """Take the first ``n_layers`` layers' states out of a filled transformers cache."""
        if hasattr(cache, "layers"):
            states = [(layer.keys, layer.values) for layer in list(cache.layers)[:n_layers]]
        else:  # transformers < 4.56
            states = [(cache.key_cache[i], cache.value_cache[i]) for i in range(n_layers)]
        if len(states) != n_layers or any(k is None or k.shape[-2] != len(ids) for k, _ in states):
            raise RuntimeError("the model did not fill the key/value cache of every kept block")
        return cls(ids, [(k.detach(), v.detach()) for k, v in states], config)

    def for_batch(self, rows: int) -> Any:
        """A fresh cache holding the prefix for ``rows`` rows (the forward appends to it, so one per batch)."""
        cache = new_cache(self.config)
        for i, (k, v) in enumerate(self.layers):
            cache.update(k.expand(rows, *k.shape[1:]), v.expand(rows, *v.shape[1:]), i)
        return cache

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


def max_relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over tokens of ‖a − b‖ / ‖b‖ (rows are tokens)."""
    if a.numel() == 0:
        return 0.0
    a, b = a.double(), b.double()
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-12)).max())


def tolerance(dtype: torch.dtype) -> float:
    return TOLERANCE.get(dtype, HALF_TOLERANCE)


__all__ = ["PrefixCache", "prefix_cache_support", "cache_kwarg", "is_causal", "full_attention_only",
           "max_relative_error", "tolerance", "new_cache"]
