"""Access tokens never leave the machine: the one list of secret options, and their removal from what is written.

Imports nothing of ours, so the report and the sweep summary can use it without importing the training stack.
"""
from __future__ import annotations

from typing import Any, Sequence

# options whose value must never be written anywhere (logs, run_args.json, run_info.json, model cards, sweeps);
# use_auth_token and push_to_hub_token are refused by the parser but still kept out of a recorded command line
SECRET_OPTIONS = ("token", "hub_token", "push_to_hub_token", "use_auth_token")
REDACTED = "<redacted>"


def redact_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options with the value of every secret one that is set replaced by <redacted>."""
    return {k: REDACTED if k in SECRET_OPTIONS and v else v for k, v in options.items()}


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The command line with the value of every secret option replaced (`--token X`, `--token=X`)."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        key, eq, _ = arg.partition("=")
        if key.startswith("--") and key[2:] in SECRET_OPTIONS:
            if eq:
                out.append(f"{key}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(arg)
    return out
