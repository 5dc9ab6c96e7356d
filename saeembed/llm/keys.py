"""Where the LLM endpoint and its API key come from — never from a command-line flag by default.

Why: ``--api-key`` puts the secret in ``ps`` output and shell history. The key is looked up in this
order: an explicit argument (the deprecated ``--api-key``), ``SAEEMBED_LLM_API_KEY``,
``OPENAI_API_KEY``, then the keys file written by ``saeembed keys set`` (``keys.json`` in the
config folder, owner-only permissions), per endpoint host with a ``default`` fallback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

from ..errors import UserError
from ..fsutil import atomic_write_text
from ..paths import config_root

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def resolve_base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("SAEEMBED_LLM_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def keys_file() -> Path:
    return config_root() / "keys.json"


def _host(base_url: str | None) -> str:
    return urlparse(base_url or "").netloc or "default"


def load_keys() -> dict[str, str]:
    path = keys_file()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"the keys file {path} is damaged; delete it and run `saeembed keys set` again") from None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def resolve_api_key(api_key: str | None, base_url: str | None) -> str | None:
    if api_key:
        return api_key
    env = os.environ.get("SAEEMBED_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")
    if env:
        return env
    keys = load_keys()
    return keys.get(_host(base_url)) or keys.get("default")


def set_key(key: str, base_url: str | None = None) -> Path:
    """Store ``key`` for the endpoint's host (or as the default), readable by the owner only."""
    if not key or not key.strip():
        raise UserError("the API key is empty; paste the key when asked")
    keys = load_keys()
    keys[_host(base_url) if base_url else "default"] = key.strip()
    path = keys_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old_umask = os.umask(0o077)  # the temporary file is created owner-only, before it holds the secret
    try:
        atomic_write_text(path, json.dumps(keys, indent=1))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return path


def remove_key(base_url: str | None = None) -> bool:
    keys = load_keys()
    host = _host(base_url) if base_url else "default"
    if host not in keys:
        return False
    del keys[host]
    old_umask = os.umask(0o077)
    try:
        atomic_write_text(keys_file(), json.dumps(keys, indent=1))
    finally:
        os.umask(old_umask)
    return True


def key_hosts() -> list[str]:
    return sorted(load_keys())


__all__ = ["resolve_base_url", "resolve_api_key", "set_key", "remove_key", "key_hosts", "keys_file",
           "DEFAULT_BASE_URL"]
