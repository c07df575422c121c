"""Bad Teaching: knowledge distillation from a competent and an incompetent teacher."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.mixing import interleave
from methods.registry import register_method


@register_method("bad_teaching")
class BadTeaching(UnlearningMethod):
    """Bad Teaching (Chundawat et al., "Can Bad Teaching Induce Forgetting?", AAAI 2023).

    arXiv 2205.08096. The student starts as the original model; the competent teacher is the
    frozen original; the incompetent teacher is a frozen, randomly initialised model of the same
    architecture. On forget samples the student minimises KL(incompetent || student), on retain
    samples KL(competent || student), both on softmax outputs at ``temperature``.

    Hyperparameters (paper/official code): ``epochs`` 1, ``retain_fraction`` 0.3 of the retain
    set per epoch, ``temperature`` 1, Adam ``lr`` 1e-4. Deviation: forget and retain samples are
    interleaved as whole batches (seeded random order) rather than shuffled into mixed batches, so
    large datasets stream. Dataset-specific setting: the embedded digits give a handful of steps
    per epoch, and at lr 1e-4 (or 1e-3 for 30 epochs) the student still predicts the forget
    class (~96 % A_Df); the ``quick`` grid uses 5 epochs at lr 1e-2 (0 %).
    """

    needs = frozenset({"forget", "retain", "architecture"})

    def __init__(self, *, epochs: int = 1, lr: float = 1e-4, retain_fraction: float = 0.3,
                 temperature: float = 1.0) -> None:
        self.epochs = epochs
        self.lr = lr
        self.retain_fraction = retain_fraction
        self.temperature = temperature

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        competent = copy.deepcopy(model).eval().requires_grad_(False)
        torch.manual_seed(task.seed)
        incompetent = task.make_model().to(task.device).eval().requires_grad_(False)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        retain_batches = math.ceil(self.retain_fraction * len(task.retain_loader))
        streams = {"forget": (task.forget_loader, len(task.forget_loader)),
                   "retain": (task.retain_loader, retain_batches)}
        model.train()
        for epoch in range(self.epochs):
            for tag, x, _ in interleave(streams, seed=task.seed + epoch):
                x = x.to(task.device, non_blocking=True)
                teacher = incompetent if tag == "forget" else competent
                with torch.no_grad():
                    target = F.softmax(teacher(x) / self.temperature, dim=1)
                log_student = F.log_softmax(model(x) / self.temperature, dim=1)
                loss = F.kl_div(log_student, target, reduction="batchmean")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            task.log(epoch=epoch + 1, loss=float(loss.detach()))
        return model.eval()

    def estimate_passes(self, shape: CellShape) -> float:
        # A student step (3) plus one teacher's forward (1) per sample.
        return 4.0 * self.epochs * (shape.n_forget + self.retain_fraction * shape.n_retain)
