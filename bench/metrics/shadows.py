"""Shadow-model privacy of one (experiment, forget set, method): U-LiRA on held-out targets and
the challenge's forgetting quality F, from per-example scores of K models of each kind.

K seeds give K method models (each unlearned from the original of its seed) and K retrained
models. The seeds are split into halves A = 0..K/2-1 and B = K/2..K-1, and each analysis runs
twice, method models of A against retrained models of B and then the other way round, so the
two sides never share a seed: for the ``retrain`` method the "unlearned" side is then retraining
at other seeds, not the reference models themselves, and retraining against retraining is a
true null. U-LiRA's statistics of both runs are pooled into one ROC; F is their mean.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.metrics.evaluate import Logits, accuracy
from bench.metrics.forget_quality import forgetting_quality
from bench.metrics.privacy import logit_confidence, threshold_attack
from bench.metrics.ulira import ulira_statistics

# Each half must hold a target and two shadows for U-LiRA's spread (3 models a side), and F's
# buckets need ln(models a side - 1) > 0.5, i.e. at least 3 models a side: K >= 6, even so that
# the halves match (the kit compares equal numbers of models).
MIN_SHADOWS = 6
SHADOW_KEYS = ("shadow_auc", "shadow_tpr_1fpr", "shadow_tpr_01fpr", "forget_quality")
# The record's field holding a cell's per-example scores, present when the grid asks for them.
SHADOW_FIELD = "shadow"
# Decimals kept of each score: the kit's thresholds are 0.01 apart, and 4 decimals keep a
# record of MNIST's 6,000 forget-train scores under 60 kB.
SCORE_DECIMALS = 4


def shadow_payload(logits: Logits) -> dict[str, Any]:
    """What the analysis needs from one cell, computed by the worker from outputs it already
    has: the logit-scaled confidence of each forget-train sample (in the loader's fixed order)
    and the accuracy on the whole test split (the challenge's test-accuracy ratio)."""
    test = [torch.cat(parts) for parts in zip(logits["forget_test"], logits["retain_test"])]
    scores = np.round(logit_confidence(*logits["forget_train"]), SCORE_DECIMALS)
    return {"forget_train_scores": scores.tolist(), "acc_test": accuracy(*test)}


def shadow_count_problem(count: int) -> str | None:
    """Why ``count`` shadow models cannot be used, or None."""
    if count < MIN_SHADOWS or count % 2:
        return (f"needs an even number of at least {MIN_SHADOWS} seeds (--shadows K or the grid "
                "key `shadows: K`): they split into two "
                "halves of at least 3 models (a held-out target and two shadows a side)")
    return None


def seed_halves(count: int) -> tuple[list[int], list[int]]:
    return list(range(count // 2)), list(range(count // 2, count))


def shadow_metrics(*, method: np.ndarray, retrained: np.ndarray) -> dict[str, Any]:
    """``shadow_auc``, ``shadow_tpr_1fpr``, ``shadow_tpr_01fpr``, ``forget_quality`` and
    ``notes`` (why a value is NaN) from [K seeds, examples] scores, row i = seed i."""
    first, second = seed_halves(len(method))
    members, nonmembers, quality = [], [], []
    for method_seeds, retrained_seeds in ((first, second), (second, first)):
        inside, outside = ulira_statistics(method[method_seeds], retrained[retrained_seeds])
        members.append(inside)
        nonmembers.append(outside)
        quality.append(forgetting_quality(method[method_seeds], retrained[retrained_seeds]))
    result = threshold_attack(np.concatenate(members), np.concatenate(nonmembers),
                              nonmembers="pairs of a retrained target model and an example")

    def renamed(name: str) -> str:  # the per-cell attack's names, e.g. forget_mia_tpr_1fpr
        return name.replace("forget_mia", "shadow")

    return {"shadow_auc": result.auc, **{renamed(k): v for k, v in result.tpr.items()},
            "forget_quality": float(np.mean(quality)),
            "notes": {renamed(k): v for k, v in result.notes.items()}}
