"""Membership attacks on the forget class: a per-example threshold attack and the NeurIPS 2023
unlearning challenge kit's population attack.

Both read only per-sample outputs of the model under test, so they cost one forward pass over
the samples the harness already evaluates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

# A threshold at false-positive rate f is only meaningful with roughly 10 / f non-members:
# below that the empirical FPR cannot resolve f (a rule of thumb of Carlini et al., "Membership
# inference attacks from first principles", S&P 2022, who report TPR at 0.1 % FPR on >= 10^4).
NONMEMBERS_PER_FPR = 10
LOW_FPRS: dict[str, float] = {"forget_mia_tpr_1fpr": 0.01, "forget_mia_tpr_01fpr": 0.001}
# The stored ROC curve: TPR at these FPRs, so that figures need no model.
ROC_FPRS: tuple[float, ...] = tuple(float(f) for f in np.logspace(-3, 0, 31))


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Cross-entropy of each sample (natural log), in float64."""
    return F.cross_entropy(logits.double(), labels, reduction="none").numpy()


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """log p_y - log(1 - p_y) per sample, without forming p_y.

    Equals z_y - logsumexp(z_j, j != y) exactly (softmax normalisers cancel), so it stays finite
    and accurate when p_y rounds to 1 or 0 in floating point, where log(1 - exp(log p_y))
    cancels. The score of LiRA (Carlini et al., S&P 2022, Sec. 4.3); U-LiRA uses it too.
    """
    z = logits.double()
    true = z.gather(1, labels[:, None]).squeeze(1)
    others = z.scatter(1, labels[:, None], -math.inf)
    return (true - torch.logsumexp(others, dim=1)).numpy()


@dataclass(kw_only=True)
class AttackResult:
    """The per-example attack's numbers, and why any of them is NaN."""

    auc: float
    tpr: dict[str, float]
    roc_tpr: list[float | None]           # TPR at ``ROC_FPRS``; None where not resolvable
    notes: dict[str, str] = field(default_factory=dict)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The best TPR of any threshold whose FPR is at most ``target`` (a ROC step function)."""
    return float(tpr[fpr <= target + 1e-12].max())


def threshold_attack(member_scores: np.ndarray, nonmember_scores: np.ndarray, *,
                     nonmembers: str = "forget-test samples") -> AttackResult:
    """A threshold attack that calls a sample "member" when its score is high; ``nonmembers``
    says what the non-member scores are, for the notes.

    AUC by scikit-learn's ``roc_auc_score`` (0.5: members and non-members indistinguishable;
    above: members look like members); TPR at each of ``LOW_FPRS``, NaN with a note when there
    are fewer than ``NONMEMBERS_PER_FPR / fpr`` non-members.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    n_in, n_out = len(member_scores), len(nonmember_scores)
    if n_in == 0 or n_out == 0:
        why = f"{n_in} members and {n_out} non-members: no attack"
        return AttackResult(auc=math.nan, tpr=dict.fromkeys(LOW_FPRS, math.nan),
                            roc_tpr=[None] * len(ROC_FPRS),
                            notes={"forget_mia_auc": why, **dict.fromkeys(LOW_FPRS, why)})
    labels = np.concatenate([np.ones(n_in), np.zeros(n_out)])
    scores = np.concatenate([member_scores, nonmember_scores])
    fpr, tpr, _ = roc_curve(labels, scores)
    rates, notes = {}, {}
    for name, target in LOW_FPRS.items():
        if n_out < NONMEMBERS_PER_FPR / target:
            rates[name] = math.nan
            notes[name] = (f"{n_out} non-members ({nonmembers}); TPR at {target:.1%} "
                           f"FPR needs at least {NONMEMBERS_PER_FPR / target:.0f}")
        else:
            rates[name] = tpr_at_fpr(fpr, tpr, target)
    # One non-member is the finest FPR step the data resolves.
    roc = [tpr_at_fpr(fpr, tpr, f) if f >= 1.0 / n_out else None for f in ROC_FPRS]
    return AttackResult(auc=float(roc_auc_score(labels, scores)), tpr=rates, roc_tpr=roc,
                        notes=notes)


def population_attack(member_losses: np.ndarray, nonmember_losses: np.ndarray, *,
                      seed: int = 0, n_splits: int = 10) -> float:
    """The NeurIPS 2023 unlearning challenge starting kit's ``simple_mia``: mean accuracy in
    percent of a logistic regression telling members from non-members by their loss.

    As in the kit (unlearning-challenge/starting-kit, ``unlearning-CIFAR10.ipynb``): the
    larger side is subsampled to the smaller one's size (balanced, chance = 50 %),
    scikit-learn's default ``LogisticRegression`` on the loss, scored by accuracy over
    ``StratifiedShuffleSplit(n_splits=10)`` (10 random 90/10 splits; our random state is the
    cell's seed, the kit's 0). One departure, for speed only: the loss is standardised and the
    same L2-regularised objective is solved by Newton-Cholesky instead of lbfgs; on a masked
    logit's losses (~1e4) lbfgs on the raw values took ~3 s a cell, this takes ~0.1 s. NaN
    when either side has fewer than ``n_splits`` samples.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(member_losses), len(nonmember_losses))
    if n < n_splits:
        return math.nan
    rng = np.random.default_rng(seed)
    members = rng.choice(member_losses, n, replace=False)
    nonmembers = rng.choice(nonmember_losses, n, replace=False)
    features = np.concatenate([members, nonmembers])[:, None]
    labels = np.concatenate([np.ones(n), np.zeros(n)])
    splits = StratifiedShuffleSplit(n_splits=n_splits, random_state=seed)
    attack = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky"))
    scores = cross_val_score(attack, features, labels, cv=splits, scoring="accuracy")
    return 100.0 * float(scores.mean())
