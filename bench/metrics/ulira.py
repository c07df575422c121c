"""U-LiRA (Hayes et al., "Inexact unlearning needs more careful evaluations to avoid a false
sense of privacy", SaTML 2025): per example, a likelihood-ratio test between the scores of
shadow models that were unlearned and of shadow models that never saw the example.

Scores are logit-scaled confidences. For each example the attack fits one Gaussian to its
scores under the unlearned shadows and one under the retrained shadows, and scores a target
model's output by the log-likelihood ratio (high: looks unlearned). The means are per
example; the standard deviation of each side is pooled over examples, as LiRA (Carlini et al.,
S&P 2022, Sec. 4.2, "fixed variance") recommends with fewer than 64 shadow models: this suite
runs a few per side, too few for a per-example spread. bench/metrics/shadows.py averages the
resulting AUC over many splits of the seeds into the two sides, and says why.
"""
from __future__ import annotations

import numpy as np

# A pooled spread of exactly 0 (every shadow gives the same scores) would make the ratio
# undefined; this floor keeps it finite without changing any real model's fit.
MIN_STD = 1e-6


def _fit(shadows: np.ndarray) -> tuple[np.ndarray, float]:
    """(per-example mean, pooled standard deviation) of [models, examples] scores."""
    pooled = float(np.sqrt(np.mean(np.var(shadows, axis=0, ddof=1))))
    return shadows.mean(axis=0), max(pooled, MIN_STD)


def _log_ratio(scores: np.ndarray, unlearned: tuple[np.ndarray, float],
               retrained: tuple[np.ndarray, float]) -> np.ndarray:
    def log_density(fit: tuple[np.ndarray, float]) -> np.ndarray:
        mean, std = fit
        return -0.5 * ((scores - mean) / std) ** 2 - np.log(std)

    return log_density(unlearned) - log_density(retrained)


def ulira_statistics(unlearned: np.ndarray, retrained: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The attack's statistic on held-out targets: (under each unlearned model, under each
    retrained model), flattened over [models, examples].

    ``unlearned`` and ``retrained`` are [models, examples] scores of models from disjoint
    seeds. Every (unlearned model a, retrained model b) pair is one fold: a and b are the
    targets, the other models the shadows, so no model is ever scored by a fit it is part of.
    A target's statistic is its mean over the folds that hold it out.
    """
    if min(len(unlearned), len(retrained)) < 3:
        raise ValueError("U-LiRA needs at least 3 models a side: one target and two shadows "
                         f"for a spread, got {len(unlearned)} and {len(retrained)}")
    members = np.zeros_like(unlearned, dtype=float)
    nonmembers = np.zeros_like(retrained, dtype=float)
    for a in range(len(unlearned)):
        unlearned_fit = _fit(np.delete(unlearned, a, axis=0))
        for b in range(len(retrained)):
            retrained_fit = _fit(np.delete(retrained, b, axis=0))
            members[a] += _log_ratio(unlearned[a], unlearned_fit, retrained_fit)
            nonmembers[b] += _log_ratio(retrained[b], unlearned_fit, retrained_fit)
    return (members / len(retrained)).ravel(), (nonmembers / len(unlearned)).ravel()
