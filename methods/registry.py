"""Name -> class registry for unlearning methods, with plugin loading."""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "unlearning_bench.methods"
_REGISTRY: dict[str, type] = {}

T = TypeVar("T", bound=type)


class PluginError(Exception):
    """A plugin could not be loaded or registered (bad user input)."""


def _where(cls: type) -> str:
    try:
        path = inspect.getsourcefile(cls) or "?"
        _, line = inspect.getsourcelines(cls)
        return f"{path}:{line}"
    except (OSError, TypeError):
        return f"{cls.__module__}.{cls.__qualname__}"


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator: make ``cls`` available to grids under ``name``."""
    if not name or not name.replace("_", "").isalnum():
        raise PluginError(f"method name {name!r} must be a non-empty identifier")

    def decorate(cls: T) -> T:
        previous = _REGISTRY.get(name)
        if previous is not None and previous is not cls:
            raise PluginError(
                f"method {name!r} registered twice: {_where(previous)} and {_where(cls)}"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def get_method(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PluginError(
            f"unknown method {name!r}; available: {', '.join(list_methods())}"
        ) from None


def list_methods() -> list[str]:
    return sorted(_REGISTRY)


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
