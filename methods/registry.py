"""One registry type for everything looked up by name (methods, datasets, architectures), and
plugin loading for methods."""
from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "unlearning_bench.methods"

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


METHODS: Registry[Any] = Registry("method", error=PluginError)


def register_method(name: str, *, label: str | None = None) -> Callable[[type], type]:
    """Class decorator: make the method available to grids under ``name`` (and ``label`` in
    tables and figures). Checks the class's declared ``needs`` against the allowed set and its
    ``search_space`` against its hyperparameters."""
    from methods.base import DATA_NEEDS
    from methods.search import check_space

    def decorate(cls: type) -> type:
        needs = getattr(cls, "needs", None)
        if not isinstance(needs, frozenset) or not needs <= DATA_NEEDS:
            raise PluginError(f"method {name!r} ({where(cls)}): needs={needs!r} must be a "
                              f"frozenset drawn from {sorted(DATA_NEEDS)}")
        if "unlearn" in getattr(cls, "__abstractmethods__", ()):
            raise PluginError(f"method {name!r} ({where(cls)}) does not define unlearn()")
        problem = check_space(getattr(cls, "search_space", {}), cls.default_params())
        if problem:
            raise PluginError(f"method {name!r} ({where(cls)}): {problem}")
        METHODS.add(name, cls, label=label)
        cls.name = name
        return cls

    return decorate


def get_method(name: str) -> type:
    return METHODS.get(name)


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)


def create_method(name: str, **params: Any) -> Any:
    """An instance of the method registered as ``name``, with ``params`` over its defaults."""
    return get_method(name)(**params)


def load_plugin_file(path: str | Path) -> None:
    """Import a Python file so that its ``@register_method`` classes register."""
    path = Path(path)
    if not path.is_file():
        raise PluginError(f"plugin file {str(path)!r} does not exist")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"unlearning_plugin_{digest}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {str(path)!r} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except PluginError:
        del sys.modules[module_name]
        raise
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's plugin
        del sys.modules[module_name]
        raise PluginError(
            f"plugin file {str(path)!r} failed to import: {type(exc).__name__}: {exc}"
        ) from None


def load_plugins(paths: tuple[str | Path, ...] | list[str | Path] = (), *,
                 use_entry_points: bool = True) -> None:
    """Load plugin files and, optionally, installed ``unlearning_bench.methods`` entry points."""
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except PluginError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise PluginError(
                    f"entry point {ep.name!r} ({ep.value}) failed to load: {exc}"
                ) from None
            log.debug("loaded entry point %s", ep.name)
    for path in paths:
        load_plugin_file(path)
