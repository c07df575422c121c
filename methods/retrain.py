"""Retraining from scratch on the retain classes: the gold reference."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.registry import register_method
from methods.search import SearchSpace


@register_method("retrain", label="Re-training")
@dataclass(kw_only=True)
class Retrain(UnlearningMethod):
    """Retraining: a fresh model of the same architecture trained on the retain data only.

    Uses exactly the original model's training recipe (``task.train_model``) and starts from
    the original's initial weights (the harness seeds ``make_model`` with the cell's seed), so
    the only difference from the original is the missing forget classes. The harness caches
    its model (``cache_model``) because later metrics compare against it.

    Args: none.

    Departure from the official code (Shash12-ship/pbu, ``experiments/MNIST Resnet.ipynb``): it
    retrains a fresh ``CustomResNet18()`` (ImageNet-pretrained by default) with Adam lr 1e-3
    for 10 epochs; ours reuses the original's recipe and its exact initial weights (seeded), so
    the missing forget classes are the only difference from the original.
    """

    needs = frozenset({"retain", "architecture"})
    search_space: ClassVar[SearchSpace] = {}  # nothing to tune: the recipe is the original model's own
    cache_model = True

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        del model  # retraining never looks at the original
        return task.train_model(task.make_model(), task.retain_loader)

    def estimate_passes(self, shape: CellShape) -> float:
        return 3.0 * shape.train_epochs * shape.n_retain
