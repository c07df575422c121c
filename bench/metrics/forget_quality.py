"""The NeurIPS 2023 unlearning challenge's forgetting quality F (Triantafillou et al., "Are we
making progress in unlearning? Findings from the first NeurIPS unlearning competition", 2024).

The recipe is the scoring kit's, google-deepmind/unlearning_evaluation, ``metric.py``
(``_get_epsilons``, ``_get_single_threshold_rates``, ``_get_double_threshold_rates``,
``compute_forget_score_from_confs``), re-implemented here:

- per forget example, the side (unlearned or retrained models) with the larger median score is
  "positive";
- if the narrower side's score range is under 1 % of the wider one's, ε is the cap (50): the
  kit's guard against a peaky unlearned distribution the thresholds cannot resolve;
- two rule families on a grid of 100 thresholds per unit of score: one threshold (score >= t
  is positive) from the smallest to the largest score, and an interval around the narrower
  side whose right end runs over its maximum ± 2 and whose left end over that minus its
  range, ± 2;
- each rule's ε = max(ln(1 − δ − FPR) − ln FNR, ln(1 − δ − FNR) − ln FPR), δ = 1e-5, clipped
  at 0; infinite when FPR = FNR = 0 (perfect separation); a rule with exactly one of FPR, FNR
  equal to 0 is dropped (the kit reads it as too few samples); the example's ε is the largest,
  clipped to [0, 50];
- F = the mean over examples of 2^−b, where b = ⌊ε / 0.5⌋ indexes buckets of width 0.5 up to
  ⌈ln(n − 1)⌉ for n models a side (the largest ε n samples can show); an ε beyond the last
  bucket scores 0. F = 1 is the maximum.

Departures, neither of which changes a rate the kit can reach: the grids step by exactly 0.01
(the kit's ``linspace`` steps by range / (count − 1)), and where no rule survives, where the kit
stops on an assertion, ε is 0 (no measurable attack).
"""
from __future__ import annotations

import math

import numpy as np

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLD_STEP = 0.01   # the kit's 100 thresholds per unit of score
INTERVAL_SLACK = 2.0    # how far the interval's ends move around the narrower side's range
PEAKY_RATIO = 0.01
BUCKET_WIDTH = 0.5


def _interval_counts(narrow: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(narrower-side scores inside, other-side scores inside) for every interval rule."""
    low, high = narrow.min(), narrow.max()
    steps = round(2 * INTERVAL_SLACK / THRESHOLD_STEP)
    rights = high - INTERVAL_SLACK + THRESHOLD_STEP * np.arange(steps + 1)
    # The left end of rule (i, j) is rights[i] - range - slack + step * j, which depends on
    # i + j only: one grid of 2 * steps + 1 left ends serves every pair.
    lefts = low - 2 * INTERVAL_SLACK + THRESHOLD_STEP * np.arange(2 * steps + 1)
    index = np.arange(steps + 1)[:, None] + np.arange(steps + 1)[None, :]

    def inside(values: np.ndarray) -> np.ndarray:
        ordered = np.sort(values)
        at_most_right = np.searchsorted(ordered, rights, side="right")
        below_left = np.searchsorted(ordered, lefts, side="left")
        return np.clip(at_most_right[:, None] - below_left[index], 0, None).ravel()

    return inside(narrow), inside(other)


def _error_rate_pairs(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Distinct (FPR, FNR) pairs, one row each, over both rule families."""
    n_pos, n_neg = len(positive), len(negative)
    scores = np.concatenate([positive, negative])
    count = max(2, math.ceil((scores.max() - scores.min()) / THRESHOLD_STEP) + 1)
    thresholds = np.linspace(scores.min(), scores.max(), count)
    above_pos = n_pos - np.searchsorted(np.sort(positive), thresholds, side="left")
    above_neg = n_neg - np.searchsorted(np.sort(negative), thresholds, side="left")
    single = np.stack([above_neg / n_neg, (n_pos - above_pos) / n_pos], axis=1)
    # The interval predicts the narrower side; ε is symmetric in FPR and FNR, so which side is
    # called positive does not matter: the rates are its misses and the other side's hits.
    narrow_is_positive = np.ptp(positive) < np.ptp(negative)
    narrow, other = (positive, negative) if narrow_is_positive else (negative, positive)
    narrow_in, other_in = _interval_counts(narrow, other)
    codes = (len(narrow) - narrow_in) * (len(other) + 1) + other_in
    pairs = np.flatnonzero(np.bincount(codes, minlength=(len(narrow) + 1) * (len(other) + 1)))
    interval = np.stack([pairs % (len(other) + 1) / len(other),
                         pairs // (len(other) + 1) / len(narrow)], axis=1)
    return np.unique(np.concatenate([single, interval]), axis=0)


def example_epsilon(positive: np.ndarray, negative: np.ndarray) -> float:
    """ε of one example from its scores under the positive side's models and the other's."""
    ranges = sorted([np.ptp(positive), np.ptp(negative)])
    if ranges[1] > 0 and ranges[0] < PEAKY_RATIO * ranges[1]:
        return EPSILON_CAP
    rates = _error_rate_pairs(positive, negative)
    fpr, fnr = rates[:, 0], rates[:, 1]
    if np.any((fpr == 0) & (fnr == 0)):
        return EPSILON_CAP
    kept = (fpr > 0) & (fnr > 0)
    fpr, fnr = fpr[kept], fnr[kept]
    with np.errstate(invalid="ignore", divide="ignore"):
        # 1 - δ - rate < 0 when the other rate is 1: that side of the max is undefined (NaN).
        both = np.stack([np.log(1 - DELTA - fpr) - np.log(fnr),
                         np.log(1 - DELTA - fnr) - np.log(fpr)])
    values = both[:, ~np.all(np.isnan(both), axis=0)]
    if values.size == 0:
        return 0.0
    return float(np.clip(np.nanmax(values), 0.0, EPSILON_CAP))


def example_epsilons(unlearned: np.ndarray, retrained: np.ndarray) -> np.ndarray:
    """ε per example from [models, examples] score matrices of the two sides."""
    if unlearned.shape != retrained.shape:
        raise ValueError(f"score matrices differ in shape: {unlearned.shape} unlearned, "
                         f"{retrained.shape} retrained")
    retrain_positive = np.median(retrained, axis=0) > np.median(unlearned, axis=0)
    return np.array([example_epsilon(*((retrained[:, i], unlearned[:, i]) if retrain_positive[i]
                                       else (unlearned[:, i], retrained[:, i])))
                     for i in range(unlearned.shape[1])])


def bucket_score(epsilons: np.ndarray, *, models: int) -> float:
    """F from per-example ε: 2^−b for the bucket b = ⌊ε / 0.5⌋ below ⌈ln(models − 1)⌉."""
    if models < 2:
        raise ValueError(f"forgetting quality needs at least 2 models a side, got {models}")
    buckets = round(math.ceil(math.log(models - 1)) / BUCKET_WIDTH)
    bucket = np.floor(np.asarray(epsilons) / BUCKET_WIDTH)
    return float(np.mean(np.where(bucket < buckets, 0.5 ** bucket, 0.0)))


def forgetting_quality(unlearned: np.ndarray, retrained: np.ndarray) -> float:
    """The challenge's F from [models, examples] scores of unlearned and retrained models."""
    return bucket_score(example_epsilons(unlearned, retrained), models=unlearned.shape[0])
