"""CF-k: catastrophic forgetting of the last k layers (fine-tune only them on retain data)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.checks import require_positive
from methods.loops import (
    ce_loss,
    chain_passes,
    freeze_all_but,
    last_layers,
    train_epochs,
)
from methods.registry import register_method
from methods.search import IntRange, LogUniform, SearchSpace
from methods.training import TrainRecipe, make_optimizer


@register_method("cf_k", label="CF-k")
@dataclass(kw_only=True)
class CFk(UnlearningMethod):
    """CF-k (Goel et al., "Towards Adversarial Evaluation of Machine Unlearning", 2022,
    arXiv 2201.06640): fine-tune only the last k layers on the retain data; the others are
    frozen, in eval mode (their BatchNorm statistics do not move either).

    "Layers" are the parameterised modules that own parameters directly (Conv, Linear,
    BatchNorm, ...) in ``model.modules()`` order (``methods.loops.last_layers``): on smallcnn,
    k = 3 is the last convolution, its BatchNorm and the linear head.

    Args:
        k: 3 (the last block plus head of smallcnn; Goel et al. vary k per architecture).
        lr: Adam learning rate, 1e-3 (this suite's fine-tuning recipe; Goel et al. reuse the
            original training recipe).
        epochs: 10 (this suite's fine-tuning).
        optimizer: "adam" or "sgd".
    """

    needs = frozenset({"retain"})
    # k from 1 to 6 parameterised layers (Goel et al. vary k per architecture; every built-in
    # architecture has more than 6), the suite's fine-tuning lr 1e-3 a decade either side,
    # epochs 1-10. EU-k inherits this space.
    search_space: ClassVar[SearchSpace] = {"k": IntRange(1, 6), "lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 10)}

    k: int = 3
    lr: float = 1e-3
    epochs: int = 10
    optimizer: str = "adam"

    def validate(self) -> None:
        require_positive(self, "k")
        self.recipe()

    def recipe(self) -> TrainRecipe:
        return TrainRecipe(lr=self.lr, epochs=self.epochs, optimizer=self.optimizer,
                           schedule="none")

    def prepare(self, layers: list[torch.nn.Module], task: UnlearningTask) -> None:
        """What happens to the last k layers before training (nothing: CF-k)."""

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        layers = last_layers(model, self.k)
        self.prepare(layers, task)
        frozen = freeze_all_but(model, layers)
        params = [p for m in layers for p in m.parameters(recurse=False)]
        optimizer = make_optimizer(params, self.recipe())
        model = train_epochs(model, chain_passes(task.retain_loader), ce_loss(model),
                             optimizer, epochs=self.epochs, task=task, frozen=frozen)
        return model.requires_grad_(True)

    def estimate_passes(self, shape: CellShape) -> float:
        return 3.0 * self.epochs * shape.n_retain
