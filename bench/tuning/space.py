"""A method's declared search space (``methods.search``) in Optuna's terms."""
from __future__ import annotations

from typing import Any

import optuna

from methods.search import Choice, Dimension, IntRange, LogUniform, contains


def distribution(dimension: Dimension) -> optuna.distributions.BaseDistribution:
    if isinstance(dimension, LogUniform):
        return optuna.distributions.FloatDistribution(dimension.low, dimension.high, log=True)
    if isinstance(dimension, IntRange):
        return optuna.distributions.IntDistribution(dimension.low, dimension.high)
    if isinstance(dimension, Choice):
        return optuna.distributions.CategoricalDistribution(dimension.options)
    return optuna.distributions.FloatDistribution(dimension.low, dimension.high)


def distributions(space: dict[str, Dimension]) -> dict[str, optuna.distributions.BaseDistribution]:
    """For ``study.ask(fixed_distributions=...)``: one distribution per searched name."""
    return {name: distribution(dim) for name, dim in space.items()}


def start_point(space: dict[str, Dimension], params: dict[str, Any]) -> dict[str, Any]:
    """The values the grid would run with, for the names whose value lies in the space: the
    first trial of every study, so tuning never ends below the setting it replaces (on
    validation)."""
    return {name: params[name] for name, dim in space.items() if contains(dim, params[name])}
