"""A small typed registry (in the spirit of torchvision's model registry and lm-evaluation-harness).

Entries are registered explicitly by the module that owns the registry (never as an import side
effect); registering a name twice raises; looking up an unknown name raises
:class:`~core.errors.UnknownNameError` with "did you mean" suggestions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered mapping ``name -> T`` with strict registration and helpful lookups.

    Args:
        kind: what the entries are, used in error messages ("recipe", "task", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; raises ``ValueError`` if the name is taken."""
        if not name or name != name.strip():
            raise ValueError(f"invalid {self.kind} name {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry called ``name``; raises ``UnknownNameError`` (with suggestions) otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
