"""Corpus names: the documented safe set, checked wherever a corpus is created.

Why: a corpus name used to become a path segment (``STORE.work/NAME``) that was later removed with
``rmtree``, so ``--name ..`` deleted the folder holding the store and a name like ``a*`` was
expanded as a glob by the shard reader. Names are now checked against a small character set, and
the work folder is derived from a digest of the name (:mod:`saeembed.encode.workdir`).
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import UserError

NAME_MAX = 64
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
NAME_RULE = (f"1-{NAME_MAX} characters from letters, digits, '_', '-' and '.', starting with a letter or digit")


def check_corpus_name(name: str | None) -> str:
    """The name itself when it is safe to create a corpus with; a one-line UserError otherwise."""
    if name is None or not str(name).strip():
        raise UserError("the corpus name is empty; pass --name NAME")
    name = str(name)
    if len(name) > NAME_MAX:
        raise UserError(f"corpus name {name[:20]!r}… is {len(name)} characters long; use at most {NAME_MAX} "
                        f"({NAME_RULE})")
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(f"corpus name {name!r} is not allowed: use {NAME_RULE}, e.g. --name my_corpus")
    return name


def default_corpus_name(corpus_path: str | Path) -> str:
    """A safe name derived from the corpus file's stem (unsafe characters become '_').

    Why not the raw stem: ``saeembed encode ..`` would otherwise be named ``..``.
    """
    stem = Path(str(corpus_path)).stem
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip("._-")[:NAME_MAX]
    if not safe:
        raise UserError(f"cannot derive a corpus name from {str(corpus_path)!r}; pass --name NAME ({NAME_RULE})")
    return safe


__all__ = ["check_corpus_name", "default_corpus_name", "NAME_RULE", "NAME_MAX", "NAME_PATTERN"]
