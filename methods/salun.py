"""SalUn: random-label unlearning restricted to the weights most salient for the forget loss."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from methods.base import CellShape, UnlearningTask
from methods.random_labels import RandomLabels
from methods.registry import register_method
from methods.search import IntRange, LogUniform, SearchSpace, Uniform


@register_method("salun", label="SalUn")
@dataclass(kw_only=True)
class SalUn(RandomLabels):
    """SalUn (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight
    Saliency", ICLR 2024; code: OPTML-Group/Unlearn-Saliency ``Classification/generate_mask.py``
    and ``Classification/unlearn/RL.py``).

    1. Saliency: the gradient of -CE on the forget set, summed over its batches (model in eval
       mode), in absolute value; the mask is 1 on the ``mask_ratio`` fraction of all weights
       with the largest saliency (one global ranking over every parameter tensor).
    2. Random-label unlearning (``random_labels``' loop) in which gradients are multiplied by
       the mask and, after each step, weights outside it are restored (the official code's
       ``_apply_mask_to_grads`` / ``_restore_masked_params``), so only masked weights move.

    Args:
        mask_ratio: fraction of weights updated, 0.5 (the official threshold list's value the
            paper recommends).
        lr: SGD learning rate, 0.013 (Unlearn-Saliency README's RL command).
        epochs: 10 (Unlearn-Saliency README).
        momentum, weight_decay: 0.9 and 5e-4 (``arg_parser.py``).

    Deviations: random labels are drawn among the retain classes (see ``random_labels``);
    BatchNorm running statistics are buffers, not weights, and move in train mode as in the
    official code.
    """

    needs = frozenset({"forget", "retain"})
    # Unlearn-Saliency's lr 0.013 a decade either side, epochs 1-10 (its 10 at the top), and the
    # mask ratio over the official threshold list's range 0.1-0.9.
    search_space: ClassVar[SearchSpace] = {"lr": LogUniform(1.3e-3, 1.3e-1), "epochs": IntRange(1, 10),
                    "mask_ratio": Uniform(0.1, 0.9)}

    mask_ratio: float = 0.5
    lr: float = 0.013

    def validate(self) -> None:
        super().validate()
        if not 0 < self.mask_ratio <= 1:
            raise ValueError(f"mask_ratio={self.mask_ratio}: allowed (0, 1]")

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask,
                grad_mask: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        return super().unlearn(model, task, grad_mask=self.saliency_mask(model, task))

    def saliency_mask(self, model: torch.nn.Module, task: UnlearningTask
                      ) -> dict[str, torch.Tensor]:
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        saliency = {n: torch.zeros_like(p) for n, p in named.items()}
        model.eval()
        for x, y in task.forget_loader:
            x, y = x.to(task.device), y.to(task.device)
            grads = torch.autograd.grad(-F.cross_entropy(model(x), y), list(named.values()),
                                        allow_unused=True)
            for n, g in zip(named, grads):
                if g is not None:
                    saliency[n] += g
        flat = torch.cat([s.abs().reshape(-1) for s in saliency.values()])
        keep = max(1, int(len(flat) * self.mask_ratio))
        threshold = torch.topk(flat, keep).values[-1]
        return {n: (s.abs() >= threshold).to(s.dtype) for n, s in saliency.items()}

    def estimate_passes(self, shape: CellShape) -> float:
        return 3.0 * shape.n_forget + super().estimate_passes(shape)
