"""NegGrad: gradient ascent on the forget set's cross-entropy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.loops import SGDSteps, ce_loss, chain_passes, train_epochs
from methods.registry import register_method
from methods.search import IntRange, LogUniform, SearchSpace


@register_method("gradient_ascent", label="NegGrad (GA)")
@dataclass(kw_only=True)
class GradientAscent(SGDSteps, UnlearningMethod):
    """NegGrad / gradient ascent (Golatkar et al., "Eternal Sunshine of the Spotless Net",
    CVPR 2020; code: OPTML-Group/Unlearn-Sparse ``unlearn/GA.py``): SGD steps that *increase*
    the cross-entropy of the forget samples, model in train mode, forget data only.

    Args:
        lr: SGD learning rate, 1e-4 (Unlearn-Sparse README command for GA).
        epochs: passes over the forget set, 5 (Unlearn-Sparse README).
        momentum: 0.9 (Unlearn-Sparse ``arg_parser.py``).
        weight_decay: 5e-4 (Unlearn-Sparse ``arg_parser.py``).

    Deviations: Unlearn-Sparse decays the lr by 10 at epochs 91 and 136 (never reached in 5
    epochs), so there is no schedule here.
    """

    needs = frozenset({"forget"})
    # Unlearn-Sparse's lr 1e-4 a decade below to two above, epochs 1-10 around its 5 (Deep
    # Unlearn: lr [1e-5, 1e-1], epochs 1..20 % of training).
    search_space: ClassVar[SearchSpace] = {"lr": LogUniform(1e-5, 1e-2), "epochs": IntRange(1, 10)}

    lr: float = 1e-4
    epochs: int = 5

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        return train_epochs(model, chain_passes(task.forget_loader), ce_loss(model, -1.0),
                            self.sgd_optimizer(model), epochs=self.epochs, task=task)

    def estimate_passes(self, shape: CellShape) -> float:
        return 3.0 * self.epochs * shape.n_forget
