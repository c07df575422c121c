"""Shared machinery of the gradient-based unlearning methods: optimisers, one pass of steps,
epochs of passes, distillation loss, random relabelling, gradient masks and layer selection.

Every method calls these instead of writing its own training loop, so that "a step" means the
same thing everywhere: move the batch to the device, compute the method's loss, zero the
gradients, back-propagate, optionally mask the gradients, step, optionally post-process.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.checks import require_positive

Batch = Any  # a tensor or a (nested) tuple of tensors; moved to the device as a whole
LossFn = Callable[[Batch, int], torch.Tensor]  # (batch on device, epoch) -> scalar loss


def sgd(params: Iterable[nn.Parameter], lr: float, *, momentum: float = 0.9,
        weight_decay: float = 5e-4) -> torch.optim.SGD:
    """SGD with the momentum and weight decay of the Unlearn-Sparse / SalUn / SCRUB code."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@dataclass(kw_only=True)
class SGDSteps:
    """Mixin of the hyperparameters every SGD-trained method has (a method redeclares a field
    to change its default): lr, epochs, momentum 0.9 and weight decay 5e-4 (the
    Unlearn-Sparse / SalUn / SCRUB optimiser)."""

    lr: float = 0.01
    epochs: int = 10
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def validate(self) -> None:
        require_positive(self, "lr", "epochs")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(f"momentum={self.momentum}, weight_decay={self.weight_decay}: "
                             "momentum must be in [0, 1) and weight_decay at least 0")

    def sgd_optimizer(self, model: nn.Module) -> torch.optim.SGD:
        return sgd(model.parameters(), self.lr, momentum=self.momentum,
                   weight_decay=self.weight_decay)


def to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch.to(device, non_blocking=True)


def run_pass(model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn,
             optimizer: torch.optim.Optimizer, *, device: torch.device, epoch: int = 0,
             grad_mask: dict[str, torch.Tensor] | None = None,
             after_step: Callable[[], None] | None = None) -> float:
    """One pass of optimiser steps over ``batches``; returns the mean loss per step.

    ``grad_mask`` ({parameter name: 0/1 tensor}) multiplies the gradients before each step;
    ``after_step`` runs after each step (SalUn puts masked-out weights back there). The caller
    sets train/eval modes.
    """
    named = dict(model.named_parameters())
    total, steps = 0.0, 0
    for batch in batches:
        loss = loss_fn(to_device(batch, device), epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_mask is not None:
            for name, mask in grad_mask.items():
                if named[name].grad is not None:
                    named[name].grad.mul_(mask)
        optimizer.step()
        if after_step is not None:
            after_step()
        total += float(loss.detach())
        steps += 1
    return total / max(steps, 1)


def train_epochs(model: nn.Module, batches: Callable[[int], Iterable[Batch]], loss_fn: LossFn,
                 optimizer: torch.optim.Optimizer, *, epochs: int, task: Any,
                 frozen: Sequence[nn.Module] = (), **pass_kwargs: Any) -> nn.Module:
    """``epochs`` passes over ``batches(epoch)`` in train mode (``frozen`` modules stay in eval
    mode, so their BatchNorm statistics do not move); logs each epoch's mean loss."""
    for epoch in range(epochs):
        set_train(model, frozen)
        loss = run_pass(model, batches(epoch), loss_fn, optimizer, device=task.device,
                        epoch=epoch, **pass_kwargs)
        task.log(epoch=epoch + 1, loss=loss)
    return model.eval()


def set_train(model: nn.Module, frozen: Sequence[nn.Module] = ()) -> None:
    model.train()
    for module in frozen:
        module.eval()


def ce_loss(model: nn.Module, sign: float = 1.0) -> LossFn:
    """``sign`` x cross-entropy of ``model`` on an (x, y) batch."""
    return lambda batch, _epoch: sign * F.cross_entropy(model(batch[0]), batch[1])


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """KL(teacher || student) at ``temperature``, summed, times T^2, per sample: RepDistiller's
    ``DistillKL`` as SCRUB uses it."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits / temperature, dim=1)
    return (F.kl_div(log_student, teacher, reduction="sum") * temperature ** 2
            / student_logits.shape[0])


def other_classes(num_classes: int, forget_classes: Sequence[int]) -> torch.Tensor:
    """The retain classes, as a tensor of labels."""
    keep = [c for c in range(num_classes) if c not in set(forget_classes)]
    if not keep:
        raise ValueError(f"forget_classes={tuple(forget_classes)} leave no other class")
    return torch.tensor(keep)


def random_labels(y: torch.Tensor, allowed: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """A label drawn uniformly from ``allowed`` for each entry of ``y`` (on the host)."""
    pick = torch.randint(len(allowed), (len(y),), generator=generator)
    return allowed[pick].to(y.device)


def relabelled(loader: Iterable, allowed: torch.Tensor, generator: torch.Generator
               ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of ``loader`` with fresh random labels from ``allowed``."""
    return ((x, random_labels(y, allowed, generator)) for x, y in loader)


def chain_passes(*loaders: Iterable) -> Callable[[int], Iterable]:
    """``batches(epoch)`` for ``train_epochs``: every batch of each loader in turn."""
    def batches(_epoch: int) -> Iterable:
        for loader in loaders:
            yield from loader
    return batches


def flat_grad(loss: torch.Tensor, params: Sequence[nn.Parameter]) -> torch.Tensor:
    """d loss / d params as one flat vector (zeros for unused parameters)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for g, p in zip(grads, params)])


def last_layers(model: nn.Module, k: int) -> list[nn.Module]:
    """The last ``k`` parameterised layers: modules that own parameters directly (Conv, Linear,
    BatchNorm, ...), in ``model.modules()`` order."""
    layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    if not 1 <= k <= len(layers):
        raise ValueError(f"k={k}: the model has {len(layers)} parameterised layers")
    return layers[-k:]


def freeze_all_but(model: nn.Module, trainable: Sequence[nn.Module]) -> list[nn.Module]:
    """Freeze every parameterised layer outside ``trainable``; returns the frozen layers."""
    keep = {id(m) for m in trainable}
    frozen = [m for m in model.modules()
              if id(m) not in keep and any(True for _ in m.parameters(recurse=False))]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def mixed_batches(major: Iterable, minor: Iterable, *, generator: torch.Generator
                  ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over the union of two loaders in mixed batches: each batch of ``major`` plus
    its share of ``minor``'s rows (in proportion to the loaders' sizes), rows shuffled, so
    that batch statistics match those of a shuffled loader over the union (SSD's importance
    on the full training set); minor rows left over come last. Holds one batch of each."""
    sizes = [getattr(loader, "num_samples", None) for loader in (major, minor)]
    ratio = (sizes[1] / max(sizes[0], 1) if None not in sizes   # in samples where known,
             else len(minor) / max(len(major), 1))               # else in batches
    rest = iter(minor)
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    owed = 0.0
    for x, y in major:
        owed += ratio * len(y)
        parts = [(x, y)]
        while owed >= 1:
            if not pending:
                nxt = next(rest, None)
                if nxt is None:
                    break
                pending.append(nxt)
            px, py = pending.pop()
            take = min(int(owed), len(py))
            parts.append((px[:take], py[:take]))
            if take < len(py):
                pending.append((px[take:], py[take:]))
            owed -= take
        xs = torch.cat([p[0] for p in parts])
        ys = torch.cat([p[1] for p in parts])
        order = torch.randperm(len(ys), generator=generator).to(ys.device)
        yield xs[order], ys[order]
    for px, py in [*pending, *rest]:
        yield px, py
