"""Shadow-model privacy of one (experiment, forget set, method): U-LiRA on held-out targets and
the challenge's forgetting quality F, from per-example scores of K models of each kind.

K seeds give K method models (each unlearned from the original of its seed) and K retrained
models. A split of the seeds into halves A and B runs each analysis twice, method models of A
against retrained models of B and then the other way round, so the two sides never share a seed:
for the ``retrain`` method the "unlearned" side is then retraining at other seeds, not the
reference models themselves, and retraining against retraining is a true null. U-LiRA's
statistics of both runs are pooled into one ROC; F is the mean of the two runs' values.

U-LiRA's numbers are then averaged over many splits (all of them up to ``MAX_SPLITS``), not read
off one. Why: on a whole forgotten class, models differ as wholes (one retrained model is less
confident than another on every example), so with a few models a side the AUC of one split
mostly says which models landed in which half. Measured on digits class 2 (quick grid, the
scores of 16 seeds, 100 draws of 8 of them, mean ± standard deviation over draws): retraining
against itself reads 0.52 ± 0.14 on one split and 0.51 ± 0.01 averaged over the 35 splits of
its 8 seeds; the original model 1.00 either way; fine-tuning 0.87 ± 0.03 and 0.86 ± 0.03, PBU
0.84 ± 0.02 and 0.83 ± 0.02. (At 6 of 16 seeds, 10 splits: 0.52 ± 0.14 and 0.53 ± 0.03.) The
average estimates what one split does (the split is arbitrary), without the split's noise; for
``retrain`` it reads 0.5 by symmetry, as a null should, every model sitting on both sides
equally often. Standardising each model's scores by its own scores on retain-train samples,
tried first, widened the one-split null (0.50 ± 0.14 to 0.51 ± 0.18, 200 draws): a model's
retain confidence barely predicts its level on the forgotten class (correlation -0.45 over 16
retrained models), and it moved fine-tuning and PBU by their changes on the retain classes (PBU
to 1.00). F stays on the one split A = 0..K/2-1, B = K/2..K-1: its thresholds cost ~3 ms an
example, too much to repeat per split.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from bench.metrics.evaluate import Logits, accuracy
from bench.metrics.forget_quality import forgetting_quality
from bench.metrics.privacy import AttackResult, logit_confidence, threshold_attack
from bench.metrics.ulira import ulira_statistics

# Each half must hold a target and two shadows for U-LiRA's spread (3 models a side), and F's
# buckets need ln(models a side - 1) > 0.5, i.e. at least 3 models a side: K >= 6, even so that
# the halves match (the kit compares equal numbers of models).
MIN_SHADOWS = 6
SHADOW_KEYS = ("shadow_auc", "shadow_tpr_1fpr", "shadow_tpr_01fpr", "forget_quality")
# The record's field holding a cell's per-example scores, present when the grid asks for them.
SHADOW_FIELD = "shadow"
# Splits of the seeds that U-LiRA's numbers are averaged over: all C(K, K/2) / 2 while that is at
# most this many (35 at K = 8), else the first split and a seeded sample (K = 10 has 126, K = 16
# has 6,435); a sample that size leaves a null spread of a few hundredths (0.02 at K = 12 with
# 32 splits, 20 draws, measured as above), against 0.10 for one split.
MAX_SPLITS = 64
SPLIT_SEED = 0
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


def seed_splits(count: int) -> list[tuple[list[int], list[int]]]:
    """Splits of seeds 0..count-1 into halves, each once (the half holding seed 0 first):
    ``seed_halves`` and the others, or a seeded sample of them past ``MAX_SPLITS``."""
    firsts = [list(c) for c in itertools.combinations(range(count), count // 2) if c[0] == 0]
    if len(firsts) > MAX_SPLITS:
        rng = np.random.default_rng(SPLIT_SEED)
        others = rng.choice(np.arange(1, len(firsts)), MAX_SPLITS - 1, replace=False)
        firsts = [firsts[0], *(firsts[i] for i in np.sort(others))]
    return [(first, [s for s in range(count) if s not in first]) for first in firsts]


def _both_ways(first: list[int], second: list[int]) -> tuple[tuple[list[int], list[int]], ...]:
    """(method seeds, retrained seeds) of the two runs of one split."""
    return (first, second), (second, first)


def split_attack(method: np.ndarray, retrained: np.ndarray,
                 split: tuple[list[int], list[int]]) -> AttackResult:
    """U-LiRA's ROC over both runs of one split."""
    members, nonmembers = [], []
    for method_seeds, retrained_seeds in _both_ways(*split):
        inside, outside = ulira_statistics(method[method_seeds], retrained[retrained_seeds])
        members.append(inside)
        nonmembers.append(outside)
    return threshold_attack(np.concatenate(members), np.concatenate(nonmembers),
                            nonmembers="pairs of a retrained target model and an example")


def shadow_metrics(*, method: np.ndarray, retrained: np.ndarray) -> dict[str, Any]:
    """``shadow_auc``, ``shadow_tpr_1fpr``, ``shadow_tpr_01fpr`` (means over ``seed_splits``),
    ``forget_quality`` (on ``seed_halves``) and ``notes`` (why a value is NaN) from
    [K seeds, examples] scores, row i = seed i."""
    attacks = [split_attack(method, retrained, split) for split in seed_splits(len(method))]
    quality = [forgetting_quality(method[m], retrained[r])
               for m, r in _both_ways(*seed_halves(len(method)))]

    def renamed(name: str) -> str:  # the per-cell attack's names, e.g. forget_mia_tpr_1fpr
        return name.replace("forget_mia", "shadow")

    # Every split has the same counts, so a NaN rate (too few non-members) is NaN in all of
    # them, with the same note.
    return {"shadow_auc": float(np.mean([a.auc for a in attacks])),
            **{renamed(k): float(np.mean([a.tpr[k] for a in attacks]))
               for k in attacks[0].tpr},
            "forget_quality": float(np.mean(quality)),
            "notes": {renamed(k): v for k, v in attacks[0].notes.items()}}
