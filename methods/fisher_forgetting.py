"""Fisher forgetting: Gaussian noise scaled by the inverse retain Fisher."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.checks import require_positive
from methods.fisher import diagonal_fisher
from methods.registry import register_method
from methods.search import LogUniform, SearchSpace


@register_method("fisher_forgetting", label="Fisher forgetting")
@dataclass(kw_only=True)
class FisherForgetting(UnlearningMethod):
    """Fisher forgetting (Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020;
    code: OPTML-Group/Unlearn-Sparse ``unlearn/fisher.py``, ``fisher_new`` / ``get_mean_var``,
    taken from Golatkar's notebooks).

    F is the diagonal Fisher of the retain data, exact over the model's own predictive
    distribution (``diagonal_fisher(kind="exact")``, eval mode: Golatkar's ``hessian`` with
    batch size 1 computes the same quantity). Per parameter tensor:
    var = alpha * min(1 / (F + 1e-8), 1e3) (the cap is 1e2 for tensors whose first dimension
    is the class count), averaged over dimension 1 for tensors of 2 or more dimensions;
    x10 for the class-count tensors (the head) and for 1-D tensors (BatchNorm); on the head
    rows of the forget classes the mean is 0 and the variance 1e-4. Then
    theta' = mu + sqrt(var) * N(0, 1), noise drawn from the cell's seed.

    Args:
        alpha: noise scale, 1e-6 (Golatkar's notebooks; Unlearn-Sparse leaves ``--alpha`` to
            the user).

    Deviation: Unlearn-Sparse's ``hessian`` squares the gradient of each 32-sample batch's
    *mean* loss (per target class, weighted by the batch-mean probability), which is smaller
    than the per-sample Fisher wherever per-sample gradients disagree, by up to the batch
    size; we use the exact per-sample form, so the same alpha adds less noise here than
    there. Its class-wise test (``num_indexes_to_replace == 4500``) is replaced by "this is
    class forgetting", which every cell of this suite is; zeroing the forget rows of the
    head is then what does most of the forgetting.
    """

    needs = frozenset({"retain"})
    # Golatkar's alpha 1e-6, two decades below and one above (1e-5 wipes a digits model).
    search_space: ClassVar[SearchSpace] = {"alpha": LogUniform(1e-8, 1e-5)}

    alpha: float = 1e-6

    def validate(self) -> None:
        require_positive(self, "alpha")

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        fisher = diagonal_fisher(model, task.retain_loader, kind="exact", device=task.device)
        generator = torch.Generator(device=task.device).manual_seed(task.seed)
        forget = list(task.forget_classes)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name not in fisher:
                    continue
                head = p.shape[0] == task.num_classes
                var = (1.0 / (fisher[name] + 1e-8)).clamp(max=1e2 if head else 1e3)
                var = self.alpha * var
                if p.ndim > 1:
                    var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
                mu = p.detach().clone()
                if head:
                    mu[forget] = 0.0
                    var[forget] = 1e-4
                if head or p.ndim == 1:
                    var = var * 10
                noise = torch.randn(p.shape, generator=generator, device=p.device)
                p.copy_(mu + var.sqrt() * noise)
        return model.eval()

    def estimate_passes(self, shape: CellShape) -> float:
        # One forward and (classes - 1) backward vectors per retain sample.
        return shape.n_retain * (1.0 + 2.0 * (shape.num_classes - 1))
