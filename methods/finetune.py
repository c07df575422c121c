"""Fine-tuning on the retain data (catastrophic forgetting as unlearning)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.registry import register_method
from methods.search import IntRange, LogUniform, SearchSpace
from methods.training import TrainRecipe, train_model


@register_method("finetune", label="Fine-tuning")
@dataclass(kw_only=True)
class FineTune(UnlearningMethod):
    """Fine-tuning: keep training the original model on retain data only, constant lr.

    Baseline of Golatkar et al. (CVPR 2020) and of the PBU paper.

    Args:
        lr: learning rate, 1e-3 (PBU paper's protocol on MNIST).
        epochs: passes over the retain data, 10 (PBU paper's protocol).
        optimizer: "adam" (PBU paper's protocol) or "sgd".

    Departures: the official PBU repository (Shash12-ship/pbu) holds no fine-tuning code, so
    there is none to compare with; the settings follow the paper's protocol. The built-in grids
    raise its lr or cut its epochs where noted in ``bench/harness/builtin_grids.py``.
    """

    needs = frozenset({"retain"})
    # The PBU paper's lr 1e-3 and 10 epochs are the centre and the top: lr a decade either
    # side, epochs 1-10 (Deep Unlearn tunes fine-tuning's lr over [1e-5, 1e-1] and epochs over
    # 1..20 % of the training epochs).
    search_space: ClassVar[SearchSpace] = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 10)}

    lr: float = 1e-3
    epochs: int = 10
    optimizer: str = "adam"

    def validate(self) -> None:
        self.recipe()  # raises ValueError naming the bad value

    def recipe(self) -> TrainRecipe:
        return TrainRecipe(lr=self.lr, epochs=self.epochs, optimizer=self.optimizer,
                           schedule="none")

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        return train_model(model, task.retain_loader, self.recipe(), device=task.device)

    def estimate_passes(self, shape: CellShape) -> float:
        return 3.0 * self.epochs * shape.n_retain
