"""Where saeembed keeps files of its own: one cache root and one config root.

Why one place: converted readers, label embeddings, LLM responses and dense-embedding caches used to
pick their folders themselves. ``SAEEMBED_CACHE`` overrides the cache root; otherwise the platform's
cache folder is used (``$XDG_CACHE_HOME/saeembed``, i.e. ``~/.cache/saeembed`` on Linux, via
platformdirs). Secrets live under the config root with owner-only permissions.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "saeembed"


def cache_root() -> Path:
    """``SAEEMBED_CACHE``, else the platform's user cache folder for saeembed."""
    env = os.environ.get("SAEEMBED_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP, appauthor=False))


def cache_path(*parts: str) -> Path:
    """A path under the cache root (``cache_path("llm", "completions.sqlite")``)."""
    return cache_root().joinpath(*parts)


def config_root() -> Path:
    """``SAEEMBED_CONFIG``, else the platform's user config folder (``$XDG_CONFIG_HOME/saeembed``)."""
    env = os.environ.get("SAEEMBED_CONFIG", "").strip()
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP, appauthor=False))


__all__ = ["cache_root", "cache_path", "config_root"]
