"""What every command shares: one-line errors, logging to stderr, the store and output options.

Errors: a :class:`UserError` (bad data, bad path, mismatched SAE) or a usage error (unknown flag,
value out of range) is printed as one ``error: ...`` line on stderr with exit status 2; a full disk,
a read-only file system and a missing permission are reported the same way, by every command;
Ctrl-C exits 130 with "aborted". Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ..errors import UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NO_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)
EXIT_ERROR = 2  # kept since the first release: users' scripts test for it
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_DUCKDB_TEXT = {"no space left": NO_SPACE[0], "file too large": errno.EFBIG, "read-only file system": errno.EROFS,
                "permission denied": errno.EACCES}


def file_system_error(exc: BaseException) -> str | None:
    """The one line for an error the file system caused (full disk, read-only file system, missing
    permission), from an ``OSError`` or DuckDB's text for the same; None for anything else.

    Why here: these come from any write of any command (work folders, shards, Parquet folders,
    caches, the store), so the command group reports them in one place. Encodes keep their
    finished shards and never leave a partial store, so the line can say so.
    """
    code, where = None, ""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE + NO_WRITE:
        code, where = exc.errno, str(exc.filename or exc.strerror)
    elif type(exc).__module__.startswith(("duckdb", "_duckdb")):
        text = str(exc).lower()
        code = next((c for needle, c in _DUCKDB_TEXT.items() if needle in text), None)
        where = str(exc).splitlines()[0][:200]
    if code is None:
        return None
    if code in NO_SPACE:
        return (f"no space left on the disk ({where}); free some space and re-run: finished shards are kept and the "
                "store is unchanged")
    if code == errno.EROFS:
        return (f"cannot write {where}: the file system is read-only; put the store (and any --parquet-dir, "
                "--work-dir, --output) on a writable disk; the store is unchanged")
    return (f"permission denied: {where}; give this user access, or use paths it may read and write; the store "
            "is unchanged")


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now (click's test runner swaps it per invocation)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")
        sys.stderr.flush()


def setup_logging() -> None:
    """saeembed's messages go to stderr as plain lines; library users configure logging themselves."""
    logger = logging.getLogger("saeembed")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class SaeembedGroup(click.Group):
    """The command group; turns every error a user can cause into one line."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        setup_logging()
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UserError as exc:
            _fail(str(exc))
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "saeembed"
            first = exc.format_message().splitlines()[0] if exc.format_message() else "invalid usage"
            _fail(f"{first[0].lower() + first[1:] if first else first} (see `{where} --help`)", exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("aborted", err=True)
            sys.exit(130)
        except Exception as exc:
            message = file_system_error(exc)
            if message is None:
                raise
            _fail(message)
        sys.exit(rv if isinstance(rv, int) else 0)


def store_option(required: bool = True) -> Callable:
    return click.option("--store", "store", envvar="SAEEMBED_STORE", required=required,
                        type=click.Path(dir_okay=False), help="DuckDB store file (or SAEEMBED_STORE)")


def open_existing_store(path: str) -> Any:
    """The store at ``path``, refusing a missing file with the command that creates one."""
    from ..api import open_store
    from ..store import check_store_file

    if not check_store_file(Path(path)):
        raise UserError(f"store {path} does not exist; encode a corpus first (saeembed encode CORPUS --store {path} "
                        "--name NAME)")
    return open_store(path)


def use_color(stream: Any = None) -> bool:
    """ANSI colour only on a terminal and never when ``NO_COLOR`` is set (https://no-color.org)."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


__all__ = ["SaeembedGroup", "store_option", "open_existing_store", "use_color", "setup_logging", "CONTEXT",
           "EXIT_ERROR"]
