"""Bad Teaching: knowledge distillation from a competent and an incompetent teacher."""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods.base import CellShape, UnlearningMethod, UnlearningTask, require_positive
from methods.mixing import interleave
from methods.registry import register_method


@register_method("bad_teaching", label="Bad Teaching")
@dataclass(kw_only=True)
class BadTeaching(UnlearningMethod):
    """Bad Teaching (Chundawat et al., "Can Bad Teaching Induce Forgetting?", AAAI 2023;
    arXiv 2205.08096).

    The student starts as the original model; the competent teacher is the frozen original;
    the incompetent teacher is a frozen, randomly initialised model of the same architecture.
    On forget samples the student minimises KL(incompetent || student), on retain samples
    KL(competent || student), both on softmax outputs at ``temperature``, in mixed batches in
    which each sample takes its own teacher.

    Args (paper and official code):
        epochs: passes, 1.
        lr: Adam learning rate, 1e-4.
        retain_fraction: share of the retain set seen per epoch, 0.3.
        temperature: distillation temperature, 1.
        batches_per_step: loader batches concatenated into one step, 4 (4 x 64 = the official
            batch of 256; drawn from a seeded interleaving of forget and retain batches so
            large datasets still stream).

    A randomly initialised ``smallcnn`` predicts an almost uniform distribution (max
    probability ~0.11), so its incompetent teacher pushes the forget class only weakly;
    ResNet-18's random outputs are peaked.
    """

    needs = frozenset({"forget", "retain", "architecture"})

    epochs: int = 1
    lr: float = 1e-4
    retain_fraction: float = 0.3
    temperature: float = 1.0
    batches_per_step: int = 4

    def validate(self) -> None:
        require_positive(self, "epochs", "lr", "retain_fraction", "temperature",
                         "batches_per_step")
        if self.retain_fraction > 1:
            raise ValueError(f"retain_fraction={self.retain_fraction}: allowed (0, 1]")

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        if len(task.forget_loader) == 0:
            raise ValueError("Bad Teaching needs forget samples; the forget loader is empty")
        competent = copy.deepcopy(model).eval().requires_grad_(False)
        torch.manual_seed(task.seed)
        incompetent = task.make_model().to(task.device).eval().requires_grad_(False)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        retain_batches = math.ceil(self.retain_fraction * len(task.retain_loader))
        streams = {"forget": (task.forget_loader, len(task.forget_loader)),
                   "retain": (task.retain_loader, retain_batches)}
        model.train()
        for epoch in range(self.epochs):
            stream = interleave(streams, seed=task.seed + epoch)
            while chunk := list(itertools.islice(stream, self.batches_per_step)):
                x = torch.cat([xb for _, xb, _ in chunk]).to(task.device, non_blocking=True)
                # On the host: selecting rows with it needs no device sync.
                forget = torch.cat([torch.full((len(xb),), tag == "forget")
                                    for tag, xb, _ in chunk])
                loss = self._step(model, x, forget, competent=competent,
                                  incompetent=incompetent, optimizer=optimizer)
            task.log(epoch=epoch + 1, loss=float(loss.detach()))
        return model.eval()

    def _step(self, model: torch.nn.Module, x: torch.Tensor, forget: torch.Tensor, *,
              competent: torch.nn.Module, incompetent: torch.nn.Module,
              optimizer: torch.optim.Optimizer) -> torch.Tensor:
        with torch.no_grad():
            target = F.softmax(_teacher_logits(x, forget, competent=competent,
                                               incompetent=incompetent) / self.temperature, dim=1)
        log_student = F.log_softmax(model(x) / self.temperature, dim=1)
        loss = F.kl_div(log_student, target, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def estimate_passes(self, shape: CellShape) -> float:
        # A student step (3) plus its one teacher's forward (1) per sample.
        return 4.0 * self.epochs * (shape.n_forget + self.retain_fraction * shape.n_retain)


def _teacher_logits(x: torch.Tensor, forget: torch.Tensor, *, competent: torch.nn.Module,
                    incompetent: torch.nn.Module) -> torch.Tensor:
    """Each sample through its own teacher only: one teacher forward per sample, not two."""
    logits: torch.Tensor | None = None
    for teacher, rows in ((incompetent, forget), (competent, ~forget)):
        if rows.any():
            out = teacher(x[rows])
            if logits is None:
                logits = out.new_empty(len(x), out.shape[1])
            logits[rows] = out
    assert logits is not None  # a step always has at least one sample
    return logits
