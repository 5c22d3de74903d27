"""User-facing errors.

Every error a user can cause by bad input (an unknown name, a malformed config, a missing dataset, a
corrupt image, an incompatible checkpoint) is a :class:`BenchError`.  The CLI prints such errors as one
line and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """An error caused by the user's input; printed as one line by the CLI (exit status 2)."""


class UnknownNameError(BenchError, KeyError):
    """A name that is not in a registry; the message suggests the closest registered names."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        elif known:
            shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            msg += f"; known {kind}s: {shown}"
        super().__init__(msg)
        self.kind, self.name, self.suggestions = kind, name, close

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ConfigError(BenchError):
    """A recipe/config file or override that does not match the schema."""


class DatasetError(BenchError):
    """A dataset that is missing, incomplete or unreadable."""


class CheckpointError(BenchError):
    """A checkpoint that cannot be loaded into the requested model."""
