"""Selective Synaptic Dampening: shrink the weights far more important to the forget data."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.checks import require_positive
from methods.loops import mixed_batches
from methods.registry import register_method
from methods.search import LogUniform, SearchSpace


@register_method("ssd", label="SSD")
@dataclass(kw_only=True)
class SSD(UnlearningMethod):
    """Selective Synaptic Dampening (Foster et al., AAAI 2024; code:
    if-loops/selective-synaptic-dampening ``ssd.py``, ``ParameterPerturber``).

    Importance of a parameter on a data set: the square of each mini-batch's *mean*
    cross-entropy gradient, averaged over the batches (``calc_importance``). This is not a
    diagonal Fisher (which averages squared *per-sample* gradients), so
    ``methods.fisher.diagonal_fisher`` is not used. Computed on the forget set (I_f) and on
    the full training set (I_d) in mixed batches, as the official shuffled loader over the
    whole training set gives them (``methods.loops.mixed_batches``: each retain batch plus
    its proportional share of forget samples). Batch composition matters: with class-pure
    batches a forget-only weight's I_d would be I_f times the forget batches' share (~1/10 on
    digits), right at alpha = 10; in mixed batches its mean gradient is diluted first.
    Where I_f > alpha * I_d, the parameter is multiplied by min(lambda * I_d / I_f, 1)
    (``modify_weight`` with ``exponent`` 1 and ``lower_bound`` 1), so no parameter grows.

    Args:
        alpha: ``selection_weighting``, 10 (the official full-class configuration).
        dampening: lambda, ``dampening_constant``, 1 (same).

    The model is in eval mode while importances are computed (running BatchNorm statistics,
    unchanged buffers); the official code leaves the mode to its caller.
    """

    needs = frozenset({"forget", "retain"})
    # The official full-class alpha 10 and lambda 1, two decades either side for alpha (the
    # SSD paper sweeps alpha over orders of magnitude) and one for lambda.
    search_space: ClassVar[SearchSpace] = {"alpha": LogUniform(0.1, 1000.0), "dampening": LogUniform(0.1, 10.0)}

    alpha: float = 10.0
    dampening: float = 1.0

    def validate(self) -> None:
        require_positive(self, "alpha", "dampening")

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        model.eval()
        forget = batch_importance(model, task.forget_loader, task.device)
        full = batch_importance(model, mixed_batches(
            task.retain_loader, task.forget_loader,
            generator=torch.Generator().manual_seed(task.seed)), task.device)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name not in forget:
                    continue
                selected = forget[name] > self.alpha * full[name]
                factor = (self.dampening * full[name] / forget[name]).clamp(max=1.0)
                p.mul_(torch.where(selected, factor, torch.ones_like(factor)))
        return model

    def estimate_passes(self, shape: CellShape) -> float:
        return 3.0 * (2 * shape.n_forget + shape.n_retain)


def batch_importance(model: torch.nn.Module, batches: Iterable, device: torch.device
                     ) -> dict[str, torch.Tensor]:
    """Mean over mini-batches of the squared mean-batch gradient of the cross-entropy."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in named.items()}
    count = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(named.values()),
                                    allow_unused=True)
        for n, g in zip(named, grads):
            if g is not None:
                total[n] += g.pow(2)
        count += 1
    return {n: t / max(count, 1) for n, t in total.items()}
