"""Fingerprints of what a result depends on besides its configuration: the code and the data.

A record or cached model made by other code or from other data has another key, so it is
recomputed instead of being served as current.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import sys
import types

import numpy as np
import torch

from bench.data import ImageData

# Images hashed per split for the data fingerprint: enough to tell two datasets apart, cheap
# for lazily read ones (Food-101 decodes this many JPEGs once per load).
FINGERPRINT_IMAGES = 32


def _tracked(module: types.ModuleType, roots: tuple[str, ...]) -> bool:
    return module.__name__.split(".")[0] in roots


def _dependencies(module: types.ModuleType, roots: tuple[str, ...]) -> list[types.ModuleType]:
    """Modules under ``roots`` that ``module`` uses: imported modules, and the modules that
    define the classes and functions it imported."""
    found = []
    for value in vars(module).values():
        target = value if isinstance(value, types.ModuleType) else sys.modules.get(
            getattr(value, "__module__", "") or "")
        if isinstance(target, types.ModuleType) and _tracked(target, roots):
            found.append(target)
    return found


def module_closure(*modules: types.ModuleType, roots: tuple[str, ...]
                   ) -> dict[str, types.ModuleType]:
    """``modules`` and every module under ``roots`` they use, transitively, by name."""
    seen: dict[str, types.ModuleType] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module.__name__ in seen:
            continue
        seen[module.__name__] = module
        todo += _dependencies(module, roots)
    return seen


def source_hash(*modules: types.ModuleType, roots: tuple[str, ...]) -> str:
    """Hash of the source of ``modules`` and of every module under ``roots`` they use,
    transitively: an edit to a helper changes the hash of every method that calls it."""
    return _source_digest(module_closure(*modules, roots=roots))


def _source_digest(seen: dict[str, types.ModuleType]) -> str:
    digest = hashlib.sha256()
    for name in sorted(seen):
        try:
            text = inspect.getsource(seen[name])
        except (OSError, TypeError):  # built without source: fall back to its name
            text = name
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def code_version(cls: type) -> str:
    """The method's code version: its explicit ``version`` attribute if the author declares
    one, else a hash of the source of its class hierarchy's modules and the ``methods``
    modules they use (plugins' own modules included)."""
    explicit = getattr(cls, "version", None)
    if explicit is not None:
        return f"v{explicit}"
    modules = [sys.modules[k.__module__] for k in cls.__mro__
               if k.__module__ in sys.modules and k.__module__ not in ("builtins", "abc")]
    roots = tuple({"methods", *(m.__name__.split(".")[0] for m in modules)})
    return source_hash(*modules, roots=roots)


def training_modules() -> dict[str, types.ModuleType]:
    """What trains an original model: the training recipe, the architectures and the modules
    they use. Kept free of the method API, so editing it does not retrain every original."""
    from bench import models
    from methods import training

    return module_closure(training, models, roots=("methods", "bench"))


@functools.cache
def training_code_version() -> str:
    return _source_digest(training_modules())


def data_fingerprint(data: ImageData) -> str:
    """A cheap hash of the loaded data: label arrays, split sizes, class names, and the bytes
    of ``FINGERPRINT_IMAGES`` evenly spaced images of each split."""
    digest = hashlib.sha256()
    for split, targets in ((data.train, data.train_targets), (data.test, data.test_targets)):
        digest.update(np.ascontiguousarray(targets, dtype=np.int64).tobytes())
        count = len(targets)
        for index in np.unique(np.linspace(0, count - 1, min(count, FINGERPRINT_IMAGES),
                                           dtype=np.int64)):
            image = split[int(index)][0]
            digest.update(torch.as_tensor(image, dtype=torch.float32).numpy().tobytes())
    digest.update("\0".join(data.classes).encode())
    return digest.hexdigest()[:16]
