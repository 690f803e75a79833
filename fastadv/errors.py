"""The error every user-facing failure derives from.

The CLI prints a ``UserError`` as one line on stderr and exits with code 2; anything else
is a bug. Each module defines its own subclass (``ConfigError``, ``DataError``,
``CheckpointError`` ...) so callers of the Python API can catch precisely.
"""


class UserError(Exception):
    """Bad input from the user (config, flag, file, checkpoint); the message is one line."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first non-empty line (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class CheckpointError(UserError, RuntimeError):
    """A weights file, checkpoint or run directory that cannot be loaded; one line for the user."""
