"""Fast Yet Effective Machine Unlearning (UNSIR): error-maximising noise, impair, repair."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods.base import CellShape, UnlearningMethod, UnlearningTask, require_positive
from methods.mixing import interleave, take_batches
from methods.registry import register_method


@register_method("fast_effective", label="Fast-Effective")
@dataclass(kw_only=True)
class FastEffective(UnlearningMethod):
    """UNSIR (Tarun et al., "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023;
    arXiv 2111.08947).

    (1) With the model frozen, learn per forget class a batch of noise inputs that maximises
    the cross-entropy of that class, with an L2 penalty on the noise. (2) Impair: one epoch of
    cross-entropy on the noise, labelled with its forget class, interleaved with a retain subset.
    (3) Repair: one epoch of cross-entropy on a fresh retain subset of the same size.

    Args (paper and official notebooks):
        noise_steps: Adam steps that learn the noise, 40.
        noise_lr: their learning rate, 0.1.
        noise_l2: weight of the noise's L2 penalty, 0.1.
        noise_samples: noise inputs per forget class, 256.
        batch_size: noise batch size, 64 (the loaders' batch size).
        retain_per_class: retain samples per retain class in each subset, 1000.
        impair_lr: Adam learning rate of the impair epoch, 0.02.
        repair_lr: Adam learning rate of the repair epoch, 0.01.

    Deviation: the retain subset is the first batches of a shuffled pass over the retain loader
    (random, about the right size, not exactly class-balanced) and repair draws a fresh one, so
    large datasets stream instead of being held in memory.
    """

    needs = frozenset({"forget", "retain"})

    noise_steps: int = 40
    noise_lr: float = 0.1
    noise_l2: float = 0.1
    noise_samples: int = 256
    batch_size: int = 64
    retain_per_class: int = 1000
    impair_lr: float = 0.02
    repair_lr: float = 0.01

    def validate(self) -> None:
        require_positive(self, "noise_steps", "noise_lr", "noise_samples", "batch_size",
                         "retain_per_class", "impair_lr", "repair_lr")
        if self.noise_l2 < 0:
            raise ValueError(f"noise_l2={self.noise_l2}: must be at least 0")

    def _learn_noise(self, model: torch.nn.Module, shape: torch.Size, label: int,
                     task: UnlearningTask) -> torch.Tensor:
        model.eval().requires_grad_(False)
        generator = torch.Generator().manual_seed(task.seed * 1000 + label)
        noise = torch.randn((self.noise_samples, *shape), generator=generator)
        noise = noise.to(task.device).requires_grad_(True)
        optimizer = torch.optim.Adam([noise], lr=self.noise_lr)
        labels = torch.full((self.noise_samples,), label, device=task.device)
        for _ in range(self.noise_steps):
            penalty = noise.square().flatten(1).sum(1).mean()
            loss = -F.cross_entropy(model(noise), labels) + self.noise_l2 * penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.requires_grad_(True)
        return noise.detach()

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        x_forget, _ = next(iter(task.forget_loader))
        noise_batches = []
        for label in task.forget_classes:
            noise = self._learn_noise(model, x_forget.shape[1:], label, task)
            targets = torch.full((len(noise),), label, device=task.device)
            noise_batches += list(zip(noise.split(self.batch_size), targets.split(self.batch_size)))
        retain_classes = task.num_classes - len(task.forget_classes)
        first_batch = next(iter(task.retain_loader))[1]
        subset_batches = min(len(task.retain_loader),
                             math.ceil(self.retain_per_class * retain_classes / len(first_batch)))

        model.train()
        impair = {"noise": (noise_batches, len(noise_batches)),
                  "retain": (task.retain_loader, subset_batches)}
        mixed = ((x, y) for _, x, y in interleave(impair, seed=task.seed))
        self._epoch(model, mixed, lr=self.impair_lr, task=task)
        task.log(epoch=1, phase="impair")
        self._epoch(model, take_batches(task.retain_loader, subset_batches), lr=self.repair_lr,
                    task=task)
        task.log(epoch=2, phase="repair")
        return model.eval()

    def estimate_passes(self, shape: CellShape) -> float:
        noise = self.noise_samples * shape.forget_class_count
        subset = min(shape.n_retain,
                     self.retain_per_class * (shape.num_classes - shape.forget_class_count))
        return 3.0 * (self.noise_steps * noise + (noise + subset) + subset)

    @staticmethod
    def _epoch(model: torch.nn.Module, batches, *, lr: float, task: UnlearningTask) -> None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for x, y in batches:
            x, y = x.to(task.device, non_blocking=True), y.to(task.device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
