"""Per-cell metrics: split accuracies and the paper's entropy membership-inference attack."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from methods.training import autocast


@torch.no_grad()
def predict_logits(model: nn.Module, loader: Iterable, *, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) over a loader, model in eval mode, results on the CPU."""
    model.eval()
    logits, labels = [], []
    with autocast(device):
        for x, y in loader:
            logits.append(model(x.to(device, non_blocking=True)).float().cpu())
            labels.append(y.cpu())
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.int64)
    return torch.cat(logits), torch.cat(labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent; NaN for an empty set."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


def softmax_entropy(logits: torch.Tensor) -> np.ndarray:
    logp = torch.log_softmax(logits.float(), dim=1)
    return (-(logp.exp() * logp).sum(1)).numpy()


def entropy_mia(*, member_logits: torch.Tensor, nonmember_logits: torch.Tensor,
                target_logits: torch.Tensor, max_per_side: int = 2000, seed: int = 0) -> float:
    """Percent of ``target`` samples an entropy attack calls "member".

    The attack of Bad Teaching / PBU: an RBF SVC (C=3, gamma="auto") on the softmax entropy,
    trained with retain-train samples as members and test samples as non-members. Both sides
    are subsampled to the same size (at most ``max_per_side``) so the SVC is balanced and fast.
    """
    from sklearn.svm import SVC

    rng = np.random.default_rng(seed)
    n = min(len(member_logits), len(nonmember_logits), max_per_side)
    if n == 0 or len(target_logits) == 0:
        return float("nan")
    members = softmax_entropy(member_logits)[rng.choice(len(member_logits), n, replace=False)]
    nonmembers = softmax_entropy(nonmember_logits)[
        rng.choice(len(nonmember_logits), n, replace=False)]
    features = np.concatenate([members, nonmembers])[:, None]
    targets = np.concatenate([np.ones(n), np.zeros(n)])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(features, targets)
    return 100.0 * float(attack.predict(softmax_entropy(target_logits)[:, None]).mean())


# A model whose predictions on the forget samples all but collapse onto one other class has
# most likely collapsed everywhere (it predicts that class for everything): retraining spreads
# a forgotten class over its neighbours (60-70 % to the most common one on Fashion-MNIST).
COLLAPSE_SHARE = 0.9


def collapse_warnings(forget_logits: torch.Tensor, forget_labels: torch.Tensor) -> list[str]:
    """Warnings from the forget samples alone: non-finite outputs, or predictions collapsed
    onto a single class that is not a forget class."""
    if len(forget_labels) == 0:
        return []
    if not torch.isfinite(forget_logits).all():
        return ["non-finite outputs on the forget samples"]
    predicted = forget_logits.argmax(1)
    counts = torch.bincount(predicted)
    top = int(counts.argmax())
    share = float(counts[top]) / len(predicted)
    if share >= COLLAPSE_SHARE and top not in set(forget_labels.tolist()):
        return [(f"collapse: {100 * share:.0f} % of the forget samples are predicted as class "
                 f"{top}; the model may predict that class for everything")]
    return []


SPLITS = ("forget_train", "retain_train", "forget_test", "retain_test")
Logits = dict[str, tuple[torch.Tensor, torch.Tensor]]


def split_logits(model: nn.Module, loaders: dict[str, Iterable], *, device: torch.device
                 ) -> Logits:
    """{split: (logits, labels)} for each of ``SPLITS``: one forward pass per split, shared
    by the paper's metrics and the ones beyond it."""
    return {name: predict_logits(model, loaders[name], device=device) for name in SPLITS}


def paper_metrics(logits: Logits, *, seed: int = 0) -> dict[str, Any]:
    """All accuracy metrics and the MIA from each split's logits, and ``warnings`` drawn from
    the forget-train predictions alone."""
    out: dict[str, Any] = {f"acc_{name}": accuracy(*logits[name]) for name in SPLITS}
    out["mia"] = entropy_mia(
        member_logits=logits["retain_train"][0],
        nonmember_logits=torch.cat([logits["forget_test"][0], logits["retain_test"][0]]),
        target_logits=logits["forget_train"][0], seed=seed,
    )
    out["warnings"] = collapse_warnings(*logits["forget_train"])
    return out


def evaluate_splits(model: nn.Module, *, forget_train: Iterable, retain_train: Iterable,
                    forget_test: Iterable, retain_test: Iterable, device: torch.device,
                    seed: int = 0) -> dict[str, Any]:
    """``paper_metrics`` of one model on the four class/split subsets."""
    loaders = {"forget_train": forget_train, "retain_train": retain_train,
               "forget_test": forget_test, "retain_test": retain_test}
    return paper_metrics(split_logits(model, loaders, device=device), seed=seed)
