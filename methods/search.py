"""Search spaces: the hyperparameters a method declares worth tuning, and their ranges.

A method lists them in its class attribute ``search_space`` (name -> dimension); the suite's
tuner (``run_bench.py --tune N``) samples them with Optuna's TPE sampler. ``register_method``
checks every space (``check_space``): names must be the method's hyperparameters, bounds valid,
and the dimension's kind must fit the default's type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LogUniform:
    """A float drawn log-uniformly from [low, high] (learning rates, loss weights)."""

    low: float
    high: float

    def problem(self) -> str | None:
        if not (_finite(self.low) and _finite(self.high) and 0 < self.low < self.high):
            return f"LogUniform({self.low!r}, {self.high!r}): needs finite 0 < low < high"
        return None

    def __str__(self) -> str:
        return f"log[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high]."""

    low: float
    high: float

    def problem(self) -> str | None:
        if not (_finite(self.low) and _finite(self.high) and self.low < self.high):
            return f"Uniform({self.low!r}, {self.high!r}): needs finite low < high"
        return None

    def __str__(self) -> str:
        return f"[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class IntRange:
    """An integer drawn uniformly from low..high, both included (epochs, layer counts)."""

    low: int
    high: int

    def problem(self) -> str | None:
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high))
        if not ints or not self.low < self.high:
            return f"IntRange({self.low!r}, {self.high!r}): needs integers low < high"
        return None

    def __str__(self) -> str:
        return f"int[{self.low}, {self.high}]"


@dataclass(frozen=True)
class Choice:
    """One of a few values (str, int, float, bool or None)."""

    options: tuple

    def problem(self) -> str | None:
        scalars = all(o is None or isinstance(o, (str, int, float, bool)) for o in self.options)
        if len(self.options) < 2 or not scalars or len(set(self.options)) < len(self.options):
            return (f"Choice({self.options!r}): needs at least two distinct str, int, float, "
                    "bool or None options")
        return None

    def __str__(self) -> str:
        return "{" + "|".join(map(str, self.options)) + "}"


Dimension = LogUniform | Uniform | IntRange | Choice
# A method's ``search_space``: hyperparameter name -> the range the tuner draws it from.
SearchSpace = dict[str, Dimension]
DIMENSIONS = (LogUniform, Uniform, IntRange, Choice)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind_problem(dimension: Dimension, default: Any) -> str | None:
    """Why ``dimension`` cannot produce values for a field whose default is ``default``."""
    if isinstance(dimension, IntRange) and (not isinstance(default, int)
                                            or isinstance(default, bool)):
        return f"{dimension} draws integers but the default is {default!r}"
    if isinstance(dimension, (LogUniform, Uniform)) and not isinstance(default, float):
        return f"{dimension} draws floats but the default is {default!r}"
    return None


def check_space(space: Any, defaults: dict[str, Any]) -> str | None:
    """The first problem with ``space`` for a method whose hyperparameters (with their defaults)
    are ``defaults``, or None when it is valid."""
    if not isinstance(space, dict):
        return f"search_space must be a dict of name -> dimension, not {type(space).__name__}"
    for name, dimension in space.items():
        if name not in defaults:
            return (f"search_space names {name!r}, not a hyperparameter; hyperparameters: "
                    f"{', '.join(defaults) or 'none'}")
        if not isinstance(dimension, DIMENSIONS):
            return (f"search_space[{name!r}] = {dimension!r}: allowed LogUniform, Uniform, "
                    "IntRange or Choice (methods.search)")
        problem = dimension.problem() or _kind_problem(dimension, defaults[name])
        if problem:
            return f"search_space[{name!r}]: {problem}"
    return None


def contains(dimension: Dimension, value: Any) -> bool:
    """Whether ``value`` is one the dimension can draw (a default outside it is not queued)."""
    if isinstance(dimension, Choice):
        return value in dimension.options
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return dimension.low <= value <= dimension.high


def describe(space: dict[str, Dimension]) -> str:
    """One line: ``lr log[0.0001, 0.01], epochs int[1, 10]``, or "nothing"."""
    return ", ".join(f"{name} {dim}" for name, dim in space.items()) or "nothing"
