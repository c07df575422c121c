"""The method registry and plugin loading for methods."""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from methods.lookup import PluginError, Registry, where

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "unlearning_bench.methods"


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
