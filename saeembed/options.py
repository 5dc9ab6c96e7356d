"""Options defined once: a dataclass is the Python API's keyword arguments *and* the CLI's flags.

Why: every option and default used to be written twice (a click decorator and a function
signature), and the two drifted. Here a function's options are one dataclass whose fields carry
their help text and flag spelling (:func:`option`); :func:`cli_options` turns the dataclass into
click options, :func:`resolve` turns ``options=`` or keyword arguments into an instance, and the
same instance is what an encode records with the corpus.

    @dataclass
    class CorrelateOptions:
        top_features: int = option(2000, "the N most frequent latents", min=1)

    @cli_options(CorrelateOptions)
    def correlate_cmd(**kwargs): opts = from_cli(CorrelateOptions, kwargs)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, TypeVar

from .errors import UserError

T = TypeVar("T")
FN = TypeVar("FN", bound=Callable[..., Any])


@dataclass(frozen=True)
class CliSpec:
    """How one field appears on the command line."""

    help: str
    flags: tuple[str, ...] = ()  # default: --field-name; "--on/--off" makes a boolean pair
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    envvar: str | None = None
    hidden: bool = False
    multiple: bool = False
    metavar: str | None = None
    cli: bool = True  # False: Python-only (e.g. an in-memory object)


def option(default: Any, help: str, *flags: str, choices: tuple[str, ...] | None = None,
           min: float | None = None, max: float | None = None, min_open: bool = False,
           envvar: str | None = None, hidden: bool = False, multiple: bool = False,
           metavar: str | None = None, cli: bool = True) -> Any:
    """A dataclass field with its CLI spelling. ``flags`` replace the default ``--field-name``
    spelling (several flags are aliases, the first is shown first; a boolean may be an
    ``--on/--off`` pair)."""
    if not help or not help.strip():
        raise ValueError("every option needs a help text")
    spec = CliSpec(help=help, flags=tuple(flags), choices=choices, min=min, max=max, min_open=min_open,
                   envvar=envvar, hidden=hidden, multiple=multiple, metavar=metavar, cli=cli)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"cli": spec})
    return dataclasses.field(default=default, metadata={"cli": spec})


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(the non-None type, whether None is allowed) of ``int | None``, ``Optional[str]``, ``tuple[int, ...]``…"""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])[0], True
    if origin in (tuple, list):
        return _base_type(typing.get_args(annotation)[0])[0], False
    return annotation, False


def _click_type(base: type, spec: CliSpec) -> Any:
    import click

    if spec.choices:
        return click.Choice(list(spec.choices))
    if base is int:
        return click.IntRange(min=spec.min, max=spec.max) if spec.min is not None or spec.max is not None else click.INT
    if base is float:
        if spec.min is not None or spec.max is not None:
            return click.FloatRange(min=spec.min, max=spec.max, min_open=spec.min_open)
        return click.FLOAT
    return click.STRING


def click_option_for(f: dataclasses.Field, hints: dict[str, Any]) -> Callable[[FN], FN]:
    """The click decorator for one dataclass field."""
    import click

    spec: CliSpec = f.metadata["cli"]
    base, _ = _base_type(hints[f.name])
    default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                           else None)
    primary = "--" + f.name.replace("_", "-")
    decls = list(spec.flags) or [primary]  # explicit flags replace the default spelling
    kwargs: dict[str, Any] = {"help": spec.help, "hidden": spec.hidden, "envvar": spec.envvar}
    if base is bool:
        if not spec.flags and default:
            decls = [f"{primary}/--no-{f.name.replace('_', '-')}"]
        pair = any("/" in d for d in decls)
        if not pair:
            kwargs["is_flag"] = True
        kwargs["default"] = None if default is None else bool(default)  # None: "decide from the data"
        kwargs["show_default"] = pair and default is not None
    else:
        kwargs["type"] = _click_type(base, spec)
        kwargs["multiple"] = spec.multiple
        kwargs["default"] = tuple(default) if spec.multiple and default is not None else default
        kwargs["show_default"] = default is not None and default != () and not spec.multiple
        if spec.metavar:
            kwargs["metavar"] = spec.metavar
    return click.option(*decls, f.name, **kwargs)


def cli_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "cli" in f.metadata and f.metadata["cli"].cli]


def cli_options(cls: type, exclude: tuple[str, ...] = ()) -> Callable[[FN], FN]:
    """Decorate a click command with one option per field of ``cls`` (in field order)."""
    hints = typing.get_type_hints(cls)
    wanted = [f for f in cli_fields(cls) if f.name not in exclude]

    def decorate(fn: FN) -> FN:
        for f in reversed(wanted):
            fn = click_option_for(f, hints)(fn)
        return fn

    return decorate


def from_cli(cls: type[T], kwargs: dict[str, Any], **extra: Any) -> T:
    """An instance of ``cls`` from a click command's keyword arguments (other keys are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in kwargs.items() if k in names}
    for f in cli_fields(cls):
        if f.metadata["cli"].multiple and f.name in values and values[f.name] is not None:
            values[f.name] = list(values[f.name])
    values.update(extra)
    return cls(**values)


def resolve(cls: type[T], options: T | None, overrides: dict[str, Any], what: str) -> T:
    """``options`` (or the defaults) with keyword overrides applied; unknown keywords are refused.

    Why both: notebook users write ``diff(store, ["a", "b"], fdr=1)``; scripts build one
    ``DiffOptions`` and reuse it.
    """
    base = options if options is not None else cls()
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UserError(f"{what}() got unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return dataclasses.replace(base, **overrides) if overrides else base


def as_dict(obj: Any) -> dict[str, Any]:
    """The options as a JSON-ready dict (what is recorded and shown)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.metadata.get("cli", CliSpec("x")).cli}


__all__ = ["option", "cli_options", "from_cli", "resolve", "as_dict", "CliSpec", "click_option_for", "cli_fields"]
