"""The CLI as the hardening tests drive it: a real invocation of ``saeembed``, and the check that a
failure is exactly one ``error:`` line with exit status 2."""

from __future__ import annotations

from click.testing import CliRunner

from saeembed.cli import main


def cli(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``saeembed ARGS``."""
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


def one_line_error(code: int, err: str) -> str:
    """``err`` when the command failed the way every user error must: exit 2, one ``error:`` line."""
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err
