"""Random labels: fine-tune on forget samples relabelled at random, together with retain data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.loops import (
    SGDSteps,
    ce_loss,
    chain_passes,
    other_classes,
    relabelled,
    train_epochs,
)
from methods.registry import register_method
from methods.search import IntRange, LogUniform, SearchSpace


@register_method("random_labels", label="Random labels")
@dataclass(kw_only=True)
class RandomLabels(SGDSteps, UnlearningMethod):
    """Random labelling (Graves et al., "Amnesiac Machine Learning", AAAI 2021; code:
    OPTML-Group/Unlearn-Sparse ``unlearn/RL.py`` and Unlearn-Saliency
    ``Classification/unlearn/RL.py``): each epoch first takes SGD steps on the forget batches
    with fresh random labels, then on the retain batches with their true labels (the official
    CIFAR-10 branch's order); cross-entropy, train mode.

    Args:
        lr: SGD learning rate, 0.01 (Unlearn-Sparse's ``unlearn_lr`` default).
        epochs: 10 (Unlearn-Sparse's ``unlearn_epochs`` default).
        momentum, weight_decay: 0.9 and 5e-4 (Unlearn-Sparse ``arg_parser.py``).

    Deviation: the official code draws labels uniformly from all classes, so a forget sample
    may keep its own label; here they are drawn from the *other* (retain) classes, as in
    Graves et al.'s description, so no forget class is ever a target (with several forget
    classes, none of them).
    """

    needs = frozenset({"forget", "retain"})
    # Unlearn-Sparse's lr 0.01 a decade either side, epochs 1-10 (its default 10 at the top).
    search_space: ClassVar[SearchSpace] = {"lr": LogUniform(1e-3, 1e-1), "epochs": IntRange(1, 10)}

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask,
                grad_mask: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        allowed = other_classes(task.num_classes, task.forget_classes)
        generator = torch.Generator().manual_seed(task.seed)
        batches = chain_passes(_Relabelled(task.forget_loader, allowed, generator),
                               task.retain_loader)
        kwargs = {} if grad_mask is None else _masked(model, grad_mask)
        return train_epochs(model, batches, ce_loss(model), self.sgd_optimizer(model),
                            epochs=self.epochs,
                            task=task, **kwargs)

    def estimate_passes(self, shape: CellShape) -> float:
        return 3.0 * self.epochs * (shape.n_forget + shape.n_retain)


class _Relabelled:
    """Re-iterable: each pass over the loader draws new random labels."""

    def __init__(self, loader, allowed: torch.Tensor, generator: torch.Generator) -> None:
        self.loader, self.allowed, self.generator = loader, allowed, generator

    def __iter__(self):
        return iter(relabelled(self.loader, self.allowed, self.generator))


def _masked(model: torch.nn.Module, mask: dict[str, torch.Tensor]) -> dict:
    """``run_pass`` arguments that update only the weights inside ``mask``: gradients are
    masked and, after each step, weights outside it are put back (weight decay and momentum
    would move them otherwise), as Unlearn-Saliency's ``_restore_masked_params`` does."""
    named = dict(model.named_parameters())
    theta0 = {n: named[n].detach().clone() for n in mask}

    def restore() -> None:
        with torch.no_grad():
            for n, m in mask.items():
                named[n].copy_(torch.where(m.bool(), named[n], theta0[n]))

    return {"grad_mask": mask, "after_step": restore}
