"""Fast Yet Effective Machine Unlearning (UNSIR): error-maximising noise, impair, repair."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.checks import require_positive
from methods.mixing import Rows, balanced_rows, loader_rows, shuffled_batches
from methods.registry import register_method
from methods.search import IntRange, LogUniform, SearchSpace


@register_method("fast_effective", label="Fast-Effective")
@dataclass(kw_only=True)
class FastEffective(UnlearningMethod):
    """UNSIR (Tarun et al., "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023;
    arXiv 2111.08947), run as in the official notebook
    (vikram2000b/Fast-Machine-Unlearning, ``Machine Unlearning.ipynb``).

    (1) With the model frozen, learn per forget class one batch of ``noise_samples`` inputs
    that maximises the cross-entropy of that class, with an L2 penalty on the noise.
    (2) Impair: the impair set is ``noise_copies`` copies of each class's noise batch (labelled
    with its class) plus a class-balanced retain subset of up to ``retain_per_class`` samples per
    retain class; one epoch of cross-entropy over it in shuffled batches of ``batch_size``.
    (3) Repair: one epoch of cross-entropy on a retain subset of the same kind and size, in
    shuffled batches of ``batch_size``.

    Args (official notebook):
        noise_steps: Adam steps that learn the noise, 40 (5 "epochs" x 8 steps).
        noise_lr: their learning rate, 0.1.
        noise_l2: weight of the noise's L2 penalty (mean over samples of the sum of squares),
            0.1.
        noise_samples: noise inputs per forget class, 256 (one batch).
        noise_copies: copies of each noise batch in the impair set, 20 (``num_batches``).
        batch_size: impair and repair batch size, 256 (not the grid's loader batch size).
        retain_per_class: retain samples per retain class in the subset, 1000.
        impair_lr: Adam learning rate of the impair epoch, 0.02.
        repair_lr: Adam learning rate of the repair epoch, 0.01.

    With one forget class out of ten and 1,000 retain samples per class, 5,120 of the impair
    set's 14,120 samples (36 %) are noise.

    Where ours departs from the official notebook, and why:

    - Noise labels: the notebook labels every noise sample with ``class_num = 0``, a counter it
      never increments, so with ``classes_to_forget = [0, 2]`` class 2's noise is labelled 0.
      Ours labels each class's noise with that class (what the paper describes).
    - Noise per copy: the notebook's inner loop runs over ``batch[0].size(0)``, the first noise
      image's channel count (3), so as written it appends only 3 of the 256 noise images per
      copy (60 per class, ~0.7 % of the impair set). Ours appends the whole batch, as the
      paper and the notebook's ``num_batches`` / ``batch_size`` variables intend.
    - Retain subset: the notebook takes the first 1,000 training images of each retain class
      in folder order and keeps them in memory; ours takes a random 1,000 per class from a
      shuffled pass over the retain loader, streamed row by row into the batches (Food-101's
      subset at 224 px would not fit in memory). Repair draws a fresh subset of the same kind
      instead of replaying the impair subset; where every retain class has at most
      ``retain_per_class`` samples (digits, CIFAR-100, Food-101) it is the same set.
    - Shuffling: the impair batches are a uniformly random partition of noise copies and
      retain samples, as in the notebook's shuffled DataLoader; within a batch the rows are
      grouped by source, which no loss or BatchNorm statistic depends on.
    - Noise learning: the notebook's freshly loaded model is in train mode while the noise is
      learned, so BatchNorm normalises with the noise batch's statistics and overwrites its
      running statistics with them; ours learns the noise against the original model in eval
      mode and leaves it untouched.
    """

    needs = frozenset({"forget", "retain"})
    # The official notebook's impair lr 0.02 and repair lr 0.01, a decade either side, and the
    # number of noise copies from 1 to the official 20: the copies set the noise's share of the
    # impair set, 36 % with the official 1,000 retain samples a class but 82 % on a set of
    # ~126 a class (digits), so the published count does not carry the published share to
    # smaller data. How the noise is learned stays official (the method's definition).
    search_space: ClassVar[SearchSpace] = {"impair_lr": LogUniform(2e-3, 2e-1),
                                           "repair_lr": LogUniform(1e-3, 1e-1),
                                           "noise_copies": IntRange(1, 20)}

    noise_steps: int = 40
    noise_lr: float = 0.1
    noise_l2: float = 0.1
    noise_samples: int = 256
    noise_copies: int = 20
    batch_size: int = 256
    retain_per_class: int = 1000
    impair_lr: float = 0.02
    repair_lr: float = 0.01

    def validate(self) -> None:
        require_positive(self, "noise_steps", "noise_lr", "noise_samples", "noise_copies",
                         "batch_size", "retain_per_class", "impair_lr", "repair_lr")
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

    def subset_size(self, n_retain: int, retain_classes: int) -> int:
        """Retain samples in each subset: ``retain_per_class`` per retain class, at most all."""
        return min(n_retain, self.retain_per_class * retain_classes)

    def impair_batches(self, model: torch.nn.Module, task: UnlearningTask
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The impair epoch's shuffled batches (x, y, source: 0 noise, 1 retain)."""
        x_forget, _ = next(iter(task.forget_loader))
        noises = [self._learn_noise(model, x_forget.shape[1:], label, task)
                  for label in task.forget_classes]
        noise = torch.cat(noises)
        noise_labels = torch.cat([torch.full((len(n),), label, device=task.device)
                                  for n, label in zip(noises, task.forget_classes)])
        n_noise = self.noise_copies * len(noise)
        subset = self.subset_size(loader_rows(task.retain_loader),
                                  task.num_classes - len(task.forget_classes))
        noise_rows = _noise_copies(noise, noise_labels, self.noise_copies,
                                   seed=task.seed, chunk=self.batch_size)
        retain_rows = balanced_rows(task.retain_loader, self.retain_per_class, task.num_classes)
        return shuffled_batches([Rows(noise_rows, task.device), Rows(retain_rows, task.device)],
                                [n_noise, subset], batch_size=self.batch_size, seed=task.seed)

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        impair = self.impair_batches(model, task)
        model.train()
        self._epoch(model, ((x, y) for x, y, _ in impair), lr=self.impair_lr, task=task)
        task.log(epoch=1, phase="impair")
        subset = self.subset_size(loader_rows(task.retain_loader),
                                  task.num_classes - len(task.forget_classes))
        retain_rows = balanced_rows(task.retain_loader, self.retain_per_class, task.num_classes)
        repair = shuffled_batches([Rows(retain_rows, task.device)], [subset],
                                  batch_size=self.batch_size, seed=task.seed + 1)
        self._epoch(model, ((x, y) for x, y, _ in repair), lr=self.repair_lr, task=task)
        task.log(epoch=2, phase="repair")
        return model.eval()

    def estimate_passes(self, shape: CellShape) -> float:
        noise = self.noise_samples * shape.forget_class_count
        subset = self.subset_size(shape.n_retain, shape.num_classes - shape.forget_class_count)
        return 3.0 * (self.noise_steps * noise + (self.noise_copies * noise + subset) + subset)

    @staticmethod
    def _epoch(model: torch.nn.Module, batches, *, lr: float, task: UnlearningTask) -> None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for x, y in batches:
            x, y = x.to(task.device, non_blocking=True), y.to(task.device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def _noise_copies(noise: torch.Tensor, labels: torch.Tensor, copies: int, *, seed: int,
                  chunk: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``copies`` copies of every noise row in a seeded random order, ``chunk`` rows at a time
    (indices only: the copies are never materialised)."""
    order = torch.randperm(copies * len(noise), generator=torch.Generator().manual_seed(seed))
    order = (order % len(noise)).to(noise.device)
    for start in range(0, len(order), chunk):
        index = order[start:start + chunk]
        yield noise[index], labels[index]

