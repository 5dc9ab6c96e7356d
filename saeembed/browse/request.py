"""What a browser page reads from its request: bounded numbers and texts, and links between pages.

Every parameter is checked here, so a route never sees a value outside its bounds: a bad one is a
400 page naming it.
"""

from __future__ import annotations

from ..errors import UserError
from ..report.page import Links


class BrowserLinks(Links):
    def __init__(self, sae: str | None = None) -> None:
        self.sae = sae

    def latent(self, feature_id: int) -> str | None:
        from flask import url_for

        return None if feature_id is None else url_for("latent", feature_id=int(feature_id), sae=self.sae)

    def doc(self, doc_id: int, feature_id: int | None = None) -> str | None:
        from flask import url_for

        return url_for("doc", doc_id=int(doc_id), feature=feature_id)


def number_arg(name: str, default: float, lo: float, hi: float, cast: type = float) -> float:
    """A numeric query parameter within [lo, hi]; a bad one is a 400 page naming it."""
    from flask import request

    raw = request.args.get(name, "")
    if raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        kind = "a whole number" if cast is int else "a number"
        raise UserError(f"{name} must be {kind}, not {raw!r}") from None
    if not lo <= value <= hi:
        raise UserError(f"{name} must lie in {lo}..{hi}, not {value}")
    return value


MAX_QUERY_CHARS = 1000  # a query of the browser's forms; every phrase in it is embedded, so it is bounded


def text_arg(name: str) -> str:
    """A free-text query parameter, stripped; longer than :data:`MAX_QUERY_CHARS` is a 400 page."""
    from flask import request

    text = request.args.get(name, "").strip()
    if len(text) > MAX_QUERY_CHARS:
        raise UserError(f"{name} is {len(text)} characters long; the browser takes at most {MAX_QUERY_CHARS} "
                        "(saeembed search on the command line takes any length)")
    return text


def choice_arg(name: str, default: str, choices: tuple[str, ...], what: str) -> str:
    """A parameter that must be one of ``choices`` (a form's drop-down); anything else is a 400 page."""
    from flask import request

    value = request.args.get(name, default)
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}; use one of {', '.join(choices)}")
    return value


def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    return int(number_arg(name, default, lo, hi, int))


def float_arg(name: str, default: float, lo: float, hi: float) -> float:
    return number_arg(name, default, lo, hi, float)
