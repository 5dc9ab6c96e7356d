"""``saeembed browse``: a local, read-only web app over a store (corpora, latents, documents,
diff and search pages). See :mod:`saeembed.browse.app` for what it guarantees."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ..errors import UserError
from .app import create_app

REMOTE_FLAG = "--allow-remote"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool = False) -> str:
    """``host`` when it is this machine only, or when serving beyond it was asked for explicitly."""
    if not is_loopback(host) and not allow_remote:
        raise UserError(f"refusing to serve on {host}: anyone who can reach it could read every document in the "
                        f"store; serve on 127.0.0.1 (the default), or pass {REMOTE_FLAG} if that is what you want")
    return host


def make_server(store: str | Path, host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False):
    """A werkzeug WSGI server for the app (not started); port 0 picks a free port (``server.port``).

    Single-threaded on purpose: requests run the reader for highlights one at a time anyway, and
    one request at a time keeps DuckDB connections and model calls free of races.
    """
    from werkzeug.serving import make_server as _make

    app = create_app(store)
    return _make(check_host(host, allow_remote), int(port), app, threaded=False)


def warm(store: str | Path) -> None:
    """Load the label embeddings once at start, so the first label search is quick and requests
    never need to write the embedding cache."""
    from ..analysis.common import as_store
    from ..labels import search_features

    st = as_store(store)
    try:
        for sae in st.sql("SELECT sae FROM saes")["sae"].to_list():
            search_features(st, "warm up", k=1, sae=sae)
    finally:
        st.close()


__all__ = ["create_app", "make_server", "check_host", "is_loopback", "warm", "REMOTE_FLAG"]
