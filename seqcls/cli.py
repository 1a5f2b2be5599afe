"""The one wrapper around every command-line entry point (seqcls-train, -predict, -merge, -export, the report,
sweep, cv).

A user's mistake (`UsageError`) is one line on stderr and exit status 2; Ctrl-C is "interrupted" and 130; a reader
that leaves a pipe early (`... | head`) is not an error. `--debug` (anywhere before a `--`) or `SEQCLS_DEBUG=1`
shows the traceback instead of the one line.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Callable, Sequence

from .errors import UsageError

DEBUG_FLAG = "--debug"
DEBUG_HELP = "show the traceback of an error instead of its one line (or set SEQCLS_DEBUG=1)"


class Stopped(Exception):
    """A command that ends on purpose with `exit_code` (a signal, another process's error): its message, if any, is
    printed as is."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def log_progress() -> None:
    """The commands' progress lines on stderr: time, level, logger and message, INFO and above."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """argv without `--debug` (before a `--` only: what follows belongs to another command) and whether it was
    given or SEQCLS_DEBUG is set."""
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    given = DEBUG_FLAG in argv[:end]
    argv = [a for a in argv[:end] if a != DEBUG_FLAG] + argv[end:]
    return argv, given or bool(os.environ.get("SEQCLS_DEBUG"))


def run_cli(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None,
            stops: tuple[type[BaseException], ...] = ()) -> int:
    """Run `main(argv)` as a console entry point and return its exit status.

    `stops`: exception types that end a command on purpose (e.g. a checkpoint saved on SIGTERM): their message is
    printed as is and their `exit_code` returned.
    """
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)
    try:
        status = main(argv)
        return status if isinstance(status, int) else 0  # None, or what main returns to a caller (train's results)
    except UsageError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (Stopped, *stops) as e:
        if debug:
            raise
        if str(e):  # another process of the same job may have said it already
            print(f"{e}", file=sys.stderr)
        return e.exit_code  # type: ignore[attr-defined]
    except KeyboardInterrupt:  # Ctrl-C while loading, tokenizing or writing: every output is written whole or not
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; that is not an error
        with contextlib.suppress(OSError):  # and Python's own flush at exit must not fail on the closed pipe
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
