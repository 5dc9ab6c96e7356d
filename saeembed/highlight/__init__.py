"""Where latents fire inside stored documents: read from the store, or recomputed with the reader.

- :mod:`.stored`: each non-zero's strongest token and each document's token ends, kept at encode, so
  snippets and views need no forward;
- :mod:`.recompute`: per-token activations re-run through the corpus' own reader and SAE (``--shade``,
  and corpora stored without positions), cached per process;
- :mod:`.snippets`: short marked texts for terminal tables and prompts;
- :mod:`.views`: documents as shaded segments for HTML reports and the browser.

The recompute path imports torch; it loads on first use, so views of stored positions stay light.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"TOKEN_SCHEMA": "recompute", "compute_token_activations": "recompute", "token_activations": "recompute",
         "cached_token_activations": "recompute", "render": "recompute", "strip_markers": "recompute"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
