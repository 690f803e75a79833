"""The error every user-facing failure derives from.

The CLI prints a ``UserError`` as one line on stderr and exits with code 2; anything else
is a bug. Each module defines its own subclass (``ConfigError``, ``DataError``,
``CheckpointError`` ...) so callers of the Python API can catch precisely.
"""


class UserError(Exception):
    """Bad input from the user (config, flag, file, checkpoint); the message is one line."""
