"""Retraining from scratch on the retain classes: the gold reference."""
from __future__ import annotations

import torch

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.registry import register_method


@register_method("retrain")
class Retrain(UnlearningMethod):
    """Retraining: a fresh model of the same architecture trained on the retain data only.

    Uses exactly the original model's training recipe (``task.train_model``), so the only
    difference from the original is the missing forget classes. No hyperparameters. The
    harness caches its model (``cache_model``) because later metrics compare against it.
    """

    needs = frozenset({"retain", "architecture"})
    cache_model = True

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        del model  # retraining never looks at the original
        return task.train_model(task.make_model(), task.retain_loader)

    def estimate_passes(self, shape: CellShape) -> float:
        return 3.0 * shape.train_epochs * shape.n_retain
