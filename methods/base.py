"""The contract between the harness and an unlearning method."""
from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from bench.params import coerce_number

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
    {"acc_forget": ..., "acc_retain": ...} on held-out data for curves only, never for decisions.
    ``train_model(model, loader)`` runs the original model's training recipe (retraining needs it).
    """

    forget_classes: tuple[int, ...]
    num_classes: int
    forget_loader: BatchLoader
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


class UnlearningMethod(abc.ABC):
    """Base class of every method. Subclasses set ``needs`` and take hyperparameters as kwargs.

    ``timings`` (phase -> seconds) may be filled by ``unlearn`` through ``task.timings``.
    """

    name: ClassVar[str] = "?"
    needs: ClassVar[frozenset[str]] = frozenset({"forget"})

    @abc.abstractmethod
    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module: ...

    def estimate_passes(self, shape: CellShape) -> float | None:
        """Work of ``unlearn`` in single-sample forward passes (a training step counts 3:
        forward and backward), an upper bound for ``--dry-run``; None when unknown."""
        del shape
        return None

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        """Constructor keyword defaults: what a grid may override and what records store."""
        signature = inspect.signature(cls.__init__)
        return {
            name: p.default
            for name, p in signature.parameters.items()
            if name != "self" and p.default is not inspect.Parameter.empty
        }

    @classmethod
    def resolve_params(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        """Defaults updated by ``overrides``, numbers coerced to the default's type, and
        validated by constructing the method once (constructors must be cheap)."""
        defaults = cls.default_params()
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise ValueError(
                f"method {cls.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(sorted(defaults)) or '(none)'}"
            )
        params = {**defaults, **{k: coerce_number(f"{cls.name}.{k}", v, defaults[k])
                                 for k, v in overrides.items()}}
        try:
            cls(**params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"method {cls.name!r}: {exc}") from None
        return params

