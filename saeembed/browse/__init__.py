"""``saeembed browse``: a local, read-only web app over a store (corpora, latents, documents,
diff and search pages). See :mod:`saeembed.browse.app` for what it guarantees."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from .app import create_app

REMOTE_FLAG = "--allow-remote"


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool | Sequence[str] = False) -> str:
    """``host`` when it is this machine only, or when serving beyond it was asked for explicitly."""
    if not is_loopback(host) and not allow_remote:
        raise UserError(f"refusing to serve on {host}: anyone who can reach it could read every document in the "
                        f"store; serve on 127.0.0.1 (the default), or pass {REMOTE_FLAG} if that is what you want "
                        "(see --help)")
    return host


def answered_hosts(host: str, allow_remote: Sequence[str] = ()) -> tuple[str, ...]:
    """The ``Host`` header names the browser answers: this machine's loopback names, the bound
    address (unless it is a wildcard such as 0.0.0.0) and exactly the names given to ``--allow-remote``.

    Why: a web page the user visits can make its own host name resolve to 127.0.0.1 (DNS
    rebinding) and then read the local server as if it were its own site; the ``Host`` header it
    sends still carries the attacker's name, so requests for any other name are refused.
    """
    names = ["localhost", "127.0.0.1", "::1"]
    bound = host.strip("[]").lower()
    try:
        wildcard = ipaddress.ip_address(bound).is_unspecified
    except ValueError:
        wildcard = False
    if not wildcard:
        names.append(bound)
    for name in allow_remote:
        for part in str(name).split(","):
            if part.strip():
                names.append(part.strip().strip("[]").lower().rstrip("."))
    return tuple(dict.fromkeys(names))


def make_server(store: str | Path, host: str = "127.0.0.1", port: int = 8765, allow_remote: Sequence[str] = ()):
    """A werkzeug WSGI server for the app (not started); port 0 picks a free port (``server.port``).
    A host other than this machine needs ``allow_remote``: the names (or addresses) other machines
    use to reach it, which are then the only ``Host`` headers answered besides this machine's own.

    Single-threaded on purpose: requests run the reader for highlights one at a time anyway, and
    one request at a time keeps DuckDB connections and model calls free of races.
    """
    from werkzeug.serving import make_server as _make

    if isinstance(allow_remote, str):
        allow_remote = [allow_remote]
    app = create_app(store, answered_hosts(host, allow_remote))
    return _make(check_host(host, tuple(allow_remote)), int(port), app, threaded=False)


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


__all__ = ["create_app", "make_server", "check_host", "answered_hosts", "is_loopback", "warm", "REMOTE_FLAG"]
