"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Raise :class:`UserError` for anything the user can fix (bad path, wrong column, mismatched
SAE); its message must name the problem *and* the fix. Anything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
