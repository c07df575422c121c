"""The contract between the harness and an unlearning method.

A method is a keyword-only dataclass: its fields are its hyperparameters (what a grid may
override and what every record stores), ``validate`` checks them, and ``unlearn`` does the work.
"""
from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from methods.search import SearchSpace

DATA_NEEDS = frozenset({"forget", "retain", "architecture"})


class BatchLoader(Protocol):
    """What a method may rely on: re-iterable (x, y) batches with a length in batches."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...


def _no_log(**_: Any) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class UnlearningTask:
    """Everything the harness hands a method; fields not covered by ``needs`` are None.

    ``log(epoch=..., **values)`` records a per-epoch curve point; ``evaluate(model)`` returns
    {"acc_forget_test": ..., "acc_retain_test": ...} on held-out data for curves only, never
    for decisions. ``train_model(model, loader)`` runs the original model's training recipe
    (retraining needs it).
    """

    forget_classes: tuple[int, ...]
    num_classes: int
    forget_loader: BatchLoader | None
    retain_loader: BatchLoader | None
    device: torch.device
    seed: int
    make_model: Callable[[], torch.nn.Module] | None = None
    train_model: Callable[[torch.nn.Module, BatchLoader], torch.nn.Module] | None = None
    log: Callable[..., None] = _no_log
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CellShape:
    """Sizes of one cell, for estimating what a method costs before running it."""

    n_forget: int            # forget-class training samples
    n_retain: int            # retain-class training samples
    num_classes: int
    forget_class_count: int
    train_epochs: int        # the original model's training recipe


@dataclass(kw_only=True)
class UnlearningMethod(abc.ABC):
    """Base class of every method. Built-in methods are ``@dataclass(kw_only=True)`` whose fields
    are the hyperparameters, with defaults (a plugin may also take them as keyword arguments of
    its own ``__init__`` and store them as attributes of the same names). Class attributes:

    - ``needs``: the data the harness hands over (a subset of ``DATA_NEEDS``);
    - ``cache_model``: the harness caches the unlearned model (retraining: later metrics compare
      against it);
    - ``name``: set by ``register_method``;
    - ``search_space``: the hyperparameters worth tuning and their ranges (``methods.search``);
      empty means nothing to tune (``run_bench.py --tune`` skips the method). Checked at
      registration against the hyperparameters.

    ``timings`` (phase -> seconds) may be filled by ``unlearn`` through ``task.timings``.
    """

    name: ClassVar[str] = "?"
    needs: ClassVar[frozenset[str]] = frozenset({"forget"})
    cache_model: ClassVar[bool] = False
    search_space: ClassVar[SearchSpace] = {}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad value and what is allowed."""

    @abc.abstractmethod
    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module: ...

    def estimate_passes(self, shape: CellShape) -> float | None:
        """Work of ``unlearn`` in single-sample forward passes (a training step counts 3:
        forward and backward), an upper bound for ``--dry-run``; None when unknown."""
        del shape
        return None

    def params(self) -> dict[str, Any]:
        """The hyperparameters this instance runs with (what every record stores)."""
        return {name: getattr(self, name) for name in self.default_params()}

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        """Keyword parameters of the constructor and their defaults: a dataclass's fields, or
        a plugin's own ``__init__(self, *, x=...)`` that stores ``self.x``."""
        return {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
