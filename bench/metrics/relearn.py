"""Relearn time: how many optimiser steps of plain fine-tuning on a small mixed sample bring the
forget-train loss back down to the original model's.

The recipe of SCRUB's ``readout_retrain`` (Kurmanji et al., NeurIPS 2023, meghdadk/SCRUB,
after Golatkar et al., CVPR 2020): a copy of the model, no weight decay, a sample of 500
training images drawn with replacement from the whole training set (so about one in
``num_classes`` is a forget sample), trained until the forget loss reaches a threshold, here
the original model's forget loss. Theirs uses SGD (lr 0.01), counts epochs over the 500
samples and stops at 100 of them; ours counts steps, uses Adam and stops at ``cap`` (see
``RelearnSettings``). Knowledge only hidden comes back in a few steps; knowledge never learned
(retraining) takes many.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods.training import autocast


@dataclass(frozen=True, kw_only=True)
class RelearnSettings:
    """Sizes and step size of the relearning run (recorded with every record).

    ``samples`` 500 is ``readout_retrain``'s. Its SGD at lr 0.01 is too slow to separate
    anything on the quick grid (digits, SmallCNN, batches of 64, classes 2/6/8, seeds 0-1):
    retraining, fine-tuning and the logit mask stay above the threshold after 200 steps and
    even Bad Teaching, which barely moves the original, needs 74-184. Adam at 1e-3 (the quick
    and fashion grids' training step size): PBU 2-16 steps, Bad Teaching 1-28, fine-tuning
    22 to over 200, retraining 115 to over 200. ``cap`` 50 steps keeps the ranking of hidden
    (PBU, Bad Teaching) against absent knowledge (retraining) and costs ~2 s a capped cell on
    the shared 2-core CPU, less than retraining's 3.5 s; 100 cost ~4.7 s, more than the
    unlearning of most quick-grid cells. A capped value is reported as capped. The forget loss
    is read on at most ``eval_samples`` fixed forget-train samples before every step.
    """

    samples: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    cap: int = 50
    eval_samples: int = 256

    def as_dict(self) -> dict[str, float | int | str]:
        return {"samples": self.samples, "batch_size": self.batch_size, "lr": self.lr,
                "optimizer": "adam", "cap": self.cap, "eval_samples": self.eval_samples}


@torch.no_grad()
def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy of ``model`` (eval mode) on one batch."""
    model.eval()
    with autocast(x.device):
        return float(F.cross_entropy(model(x).float(), y))


def relearn_steps(model: nn.Module, *, batches: Iterable, forget_x: torch.Tensor,
                  forget_y: torch.Tensor, target_loss: float, settings: RelearnSettings
                  ) -> tuple[int, bool]:
    """(steps, capped): Adam steps on ``batches`` (cycled, a copy of ``model`` in train mode)
    until its loss on (``forget_x``, ``forget_y``) is at most ``target_loss``; (cap, True) if
    ``settings.cap`` steps do not get there. The caller seeds torch and the batch order."""
    student = copy.deepcopy(model)
    optimizer = torch.optim.Adam(student.parameters(), lr=settings.lr)
    steps = 0
    while True:
        empty = True
        for x, y in batches:
            empty = False
            if mean_loss(student, forget_x, forget_y) <= target_loss:
                return steps, False
            if steps == settings.cap:
                return steps, True
            student.train()
            with autocast(x.device):
                loss = F.cross_entropy(student(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        if empty:
            raise ValueError("relearning needs at least one batch of training samples")
