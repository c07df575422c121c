"""Fine-tuning on the retain data (catastrophic forgetting as unlearning)."""
from __future__ import annotations

import torch

from bench.training import TrainRecipe, train_model
from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.registry import register_method


@register_method("finetune")
class FineTune(UnlearningMethod):
    """Fine-tuning: keep training the original model on retain data only.

    Baseline of Golatkar et al. (CVPR 2020) and of the PBU paper. Hyperparameters (PBU paper's
    protocol on MNIST): Adam, ``lr`` 1e-3, ``epochs`` 10, constant learning rate.

    Dataset-specific setting: on the ``quick`` grid (1,258 digits images, ~18 steps per epoch)
    lr 1e-3 leaves ~46 % forget accuracy after 10 epochs; the grid uses lr 3e-3 (0 %).
    """

    needs = frozenset({"retain"})

    def __init__(self, *, lr: float = 1e-3, epochs: int = 10, optimizer: str = "adam") -> None:
        self.recipe = TrainRecipe(lr=lr, epochs=epochs, optimizer=optimizer, schedule="none")

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        return train_model(model, task.retain_loader, self.recipe, device=task.device)

    def estimate_passes(self, shape: CellShape) -> float:
        return 3.0 * self.recipe.epochs * shape.n_retain
