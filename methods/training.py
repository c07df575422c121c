"""The supervised training recipe: the original model's, retraining's and fine-tuning's.

It lives with the methods because methods train with it; the harness trains the original model
with the same function, so "retraining" means exactly the original's recipe.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from methods.checks import require_positive

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

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid", "allow_inf_nan": False}

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; allowed: adam, sgd")
        if self.schedule not in ("cosine", "none"):
            raise ValueError(f"unknown schedule {self.schedule!r}; allowed: cosine, none")
        require_positive(self, "epochs", "batch_size", "lr")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(f"momentum={self.momentum}, weight_decay={self.weight_decay}: "
                             "momentum must be in [0, 1) and weight_decay at least 0")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def autocast(device: torch.device | str) -> AbstractContextManager:
    """bf16 autocast for training and evaluation forward passes on GPUs that support it.

    Not used for the Fisher information or PBU's penalty, whose squared gradients need float32.
    Off on the CPU, where results stay float32 like the reference implementations'.
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
