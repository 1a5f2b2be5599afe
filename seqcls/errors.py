"""The one exception type for a user's mistake, and how the CLIs report it."""
from __future__ import annotations


class UsageError(Exception):
    """A mistake the user can fix: bad file, bad label, bad option.

    The message is one line: what is wrong, where (file and line, or key), and how to fix it.
    The command-line entry points print it and exit with status 2, without a traceback.
    """

    exit_code = 2
