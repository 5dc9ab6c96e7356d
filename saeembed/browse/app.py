"""The feature browser: a read-only Flask app over one store.

Every request opens its own read-only DuckDB connection with external access disabled and closes
it when the response is sent, so the file is never held between requests (an encode can take the
write lock meanwhile; a request that arrives during the write gets a 503 page asking to retry).
Routes answer GET only, take ids and words (never paths or SQL), and every failure is a page
with a status code: 400 for bad input, 403 for a request addressed to a host name the server was
not started for (DNS rebinding), 404 for unknown ids, 405 for other methods, 503 while the store
is being written, 500 (logged, no traceback shown) for anything else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .. import store as store_mod
from ..errors import UserError
from ..report.assets import require_faces
from ..store.handle import Store
from .data import NotFoundError
from .routes import register

log = logging.getLogger("saeembed.browse")


class RequestStore(Store):
    """A Store whose connection is read-only and cannot touch other files (``read_parquet`` & co.)."""

    def _reader(self):
        if self._con is None:
            self._con = store_mod.connect(self.path, read_only=True, external_access=False)
        return store_mod.StoreReader(self._con)


def request_host(header: str) -> str:
    """The host name of a ``Host`` header (``name:port``, ``[v6]:port``), lower case, without the port.

    Not werkzeug's ``host_is_trusted``: it cuts ``[::1]`` at the first colon and never matches it.
    """
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return (h.rsplit(":", 1)[0] if h.count(":") == 1 else h).rstrip(".")


def create_app(store_path: str | Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")):
    """The browser app for ``store_path`` (which must exist), answering requests whose ``Host`` is one
    of ``hosts`` (see :func:`saeembed.browse.answered_hosts`) and 403 to any other."""
    from flask import Flask, abort, g, request
    from jinja2 import ChoiceLoader, PackageLoader


    require_faces()
    path = Path(store_path)
    if not path.exists():
        raise UserError(f"store {path} does not exist; encode a corpus first (saeembed encode CORPUS --store {path})")
    app = Flask("saeembed.browse", static_folder=None)  # no static route: nothing is served from disk
    app.jinja_loader = ChoiceLoader([PackageLoader("saeembed.browse", "templates"),
                                     PackageLoader("saeembed.report", "templates")])
    app.config.update(STORE_PATH=path, PROPAGATE_EXCEPTIONS=False, MAX_CONTENT_LENGTH=0)

    @app.before_request
    def open_store() -> None:
        host = request.environ.get("HTTP_HOST")  # None only for HTTP/1.0 clients, never from a browser
        if host is not None and request_host(host) not in hosts:
            abort(403, f"this browser answers requests for {', '.join(hosts)}, not for {host!r}: a page of "
                       "another site cannot read it. To reach it by that name, restart it with --allow-remote "
                       f"{request_host(host) or 'NAME'}")
        g.store = RequestStore(path)
        g.store.con  # noqa: B018 - open now, so a locked file becomes a 503 page, not a failure mid-page

    @app.teardown_request
    def close_store(_exc: BaseException | None) -> None:
        st = g.pop("store", None)
        if st is not None:
            st.close()

    @app.after_request
    def headers(resp):
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp


    register(app)
    _register_errors(app)
    return app


def _register_errors(app: Any) -> None:
    from flask import render_template
    from werkzeug.exceptions import HTTPException

    def page(code: int, title: str, message: str):
        return render_template("error.html", code=code, title=title, message=message), code

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return page(exc.code or 500, exc.name, exc.description or "")

    @app.errorhandler(NotFoundError)
    def not_found(exc: NotFoundError):
        return page(404, "Not found", str(exc))

    @app.errorhandler(UserError)
    def bad_input(exc: UserError):
        text = str(exc)
        if text.startswith("cannot open store"):
            return page(503, "Store busy", f"{text}. An encode may be writing it; retry in a moment.")
        if text.startswith("no corpus named") or text.startswith("no document"):
            return page(404, "Not found", text)
        return page(400, "Bad request", text)

    @app.errorhandler(Exception)
    def internal(exc: Exception):
        log.exception("browser request failed")
        return page(500, "Internal error", f"{type(exc).__name__}: the server log has the details.")


__all__ = ["create_app", "request_host", "RequestStore"]
