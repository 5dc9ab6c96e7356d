"""The CLI reference page of the docs site, generated from the commands' own ``--help``.

Why generated: a hand-written reference drifts from the flags the moment one is added; this page is
written by ``python -m saeembed.cli.reference --write docs/cli.md`` and a test fails when the file
differs from what the code prints, so the docs can only be stale for as long as a failing test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import click

WIDTH = 100  # fixed, so the page does not depend on the terminal it was generated in

HEADER = """# Command-line reference

Every command and its options, as `saeembed COMMAND --help` prints them. This page is generated
from the code (`python -m saeembed.cli.reference --write docs/cli.md`); a test fails when it is stale.
"""


def _context(cmd: click.Command, name: str, parent: click.Context | None) -> click.Context:
    settings = {**cmd.context_settings, "max_content_width": WIDTH, "terminal_width": WIDTH}
    return click.Context(cmd, info_name=name, parent=parent, **settings)


def _walk(cmd: click.Command, path: list[str], parent: click.Context | None, out: list[str]) -> None:
    ctx = _context(cmd, path[-1], parent)
    level = "#" * min(len(path) + 1, 4)
    out.append(f"{level} `{' '.join(path)}`\n\n```text\n{cmd.get_help(ctx)}\n```\n")
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.list_commands(ctx)):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                _walk(sub, [*path, name], ctx, out)


def cli_reference() -> str:
    """The Markdown of the whole reference: the group's help, then every command's, alphabetically."""
    from . import main

    out = [HEADER]
    _walk(main, ["saeembed"], None, out)
    return "\n".join(out)


def main_entry(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m saeembed.cli.reference", description=__doc__)
    ap.add_argument("--write", type=Path, help="write the page to this file instead of stdout")
    args = ap.parse_args(argv)
    text = cli_reference()
    if args.write:
        args.write.write_text(text, encoding="utf-8")
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main_entry()
