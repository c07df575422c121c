"""A name -> object lookup with display labels, shared by methods, datasets and architectures.

Kept apart from method registration and plugin loading so that what trains an original model
(bench.models uses it) does not change version when those do.
"""
from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(LookupError):
    """An unknown or twice-registered name (bad user input: the CLI exits 2 with the message)."""


class PluginError(RegistryError):
    """A plugin could not be loaded or registered."""


def where(obj: object) -> str:
    """``file:line`` of a class or function, for error messages that point at the culprit."""
    try:
        path = inspect.getsourcefile(obj) or "?"  # type: ignore[arg-type]
        _, line = inspect.getsourcelines(obj)  # type: ignore[arg-type]
        return f"{path}:{line}"
    except (OSError, TypeError):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    label: str
    origin: object  # what error messages point at (the class or loader function)


class Registry(Generic[T]):
    """Name -> object, with a display label per name. Every duplicate name is an error."""

    def __init__(self, kind: str, *, error: type[Exception] = RegistryError) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, *, label: str | None = None,
            origin: object = None) -> T:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise self.error(f"{self.kind} name {name!r} must be a non-empty identifier "
                             "(letters, digits, '_' and '-')")
        origin = value if origin is None else origin
        previous = self._entries.get(name)
        if previous is not None and previous.origin is not origin:
            raise self.error(f"{self.kind} {name!r} registered twice: {where(previous.origin)} "
                             f"and {where(origin)}")
        self._entries[name] = Entry(name, value, label or name, origin)
        return value

    def decorator(self, name: str, *, label: str | None = None) -> Callable[[T], T]:
        return lambda value: self.add(name, value, label=label)

    def get(self, name: str) -> T:
        try:
            return self._entries[name].value
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}; available: "
                             f"{', '.join(self.names())}") from None

    def label(self, name: str) -> str:
        """The display label; a name that is not registered (say, from old records) is its own."""
        entry = self._entries.get(name)
        return entry.label if entry else name

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def snapshot(self) -> dict[str, Entry[T]]:
        return dict(self._entries)

    def restore(self, entries: dict[str, Entry[T]]) -> None:
        """Put back a ``snapshot`` (tests that register throw-away entries)."""
        self._entries = dict(entries)
