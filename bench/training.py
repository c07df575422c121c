"""The training recipe shared by the original model and retraining."""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.accel import autocast
from bench.errors import BenchInputError
from bench.params import coerce_number

log = logging.getLogger(__name__)

# Bump when train_model's behaviour changes: it is part of every cached model's key.
RECIPE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class TrainRecipe:
    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "adam"        # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9          # sgd only
    weight_decay: float = 0.0
    schedule: str = "cosine"       # cosine | none

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainRecipe:
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise BenchInputError(
                f"unknown training setting {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        defaults = cls()
        try:
            recipe = cls(**{k: coerce_number(f"train.{k}", v, getattr(defaults, k))
                            for k, v in values.items()})
        except ValueError as exc:
            raise BenchInputError(str(exc)) from None
        if recipe.optimizer not in ("adam", "sgd"):
            raise BenchInputError(f"unknown optimizer {recipe.optimizer!r}; allowed: adam, sgd")
        if recipe.epochs < 1 or recipe.batch_size < 1 or recipe.lr <= 0:
            raise BenchInputError(f"training recipe {recipe.as_dict()}: epochs, batch_size and "
                                  "lr must be positive")
        if recipe.schedule not in ("cosine", "none"):
            raise BenchInputError(f"unknown schedule {recipe.schedule!r}; allowed: cosine, none")
        return recipe

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_optimizer(params: Iterable[nn.Parameter], recipe: TrainRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def train_model(model: nn.Module, loader: Iterable, recipe: TrainRecipe, *,
                device: torch.device) -> nn.Module:
    """Plain supervised training with cross-entropy; the caller seeds torch beforehand."""
    model.to(device).train()
    optimizer = make_optimizer(model.parameters(), recipe)
    steps = max(1, recipe.epochs * len(loader))
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
                 if recipe.schedule == "cosine" else None)
    for epoch in range(recipe.epochs):
        total, count = 0.0, 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        log.debug("epoch %d/%d loss %.4f", epoch + 1, recipe.epochs, total / max(count, 1))
    return model.eval()
