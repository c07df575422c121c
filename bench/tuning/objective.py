"""The declared tuning objectives: one number per trial, lower is better, the same for every
method. Each is scored per forget set on tuning's validation view (``Experiment.validation``:
"test" accuracies there are validation accuracies) and averaged over the forget sets.

- ``retrain-gap`` (the default): |A_Df - A_Df(retrain)| + |A_Dr - A_Dr(retrain)| on the
  validation split, the sum of accuracy gaps to retraining that Deep Unlearn minimises
  (xcadet/deepunlearn, ``munl/hpsearch/objectives.py``, there with more terms). It reads
  retain-class validation samples and a model retrained on retain data.
- ``forget-only`` (opt-in, for methods that must not see retain data, like PBU): reads only
  forget-class validation samples and the original model, which such a method holds anyway.
  Score: A_Df + (100 - forget agreement), where forget agreement is the percentage of
  forget-class validation samples that the unlearned model assigns to the retain class the
  original ranks first among the retain classes. Retraining sends a forgotten sample mostly
  to its nearest retain class, and a collapsed model (everything in one class) scores badly,
  so this stands in for utility. What it costs: it never measures accuracy on retain-class
  samples, so damage that leaves the forget samples' second choice intact goes unseen; its
  values are not on the same scale as ``retrain-gap`` (retraining itself does not score 0),
  so methods tuned under different objectives did not compete under the same rule. The
  tuned file records which objective each entry used.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from bench.metrics import predict_logits

FORGET_AGREEMENT = "forget_agreement"


@dataclass(frozen=True, kw_only=True)
class Objective:
    name: str
    needs_retrain: bool   # whether a retrained reference cell is needed per forget set
    score: Callable[[dict[str, Any], dict[str, Any] | None], float]


def _retrain_gap(record: dict[str, Any], reference: dict[str, Any] | None) -> float:
    if reference is None:
        raise ValueError("the retrain-gap objective needs the retrained reference's record")
    return (abs(record["acc_forget_test"] - reference["acc_forget_test"])
            + abs(record["acc_retain_test"] - reference["acc_retain_test"]))


def _forget_only(record: dict[str, Any], reference: dict[str, Any] | None) -> float:
    del reference  # never reads retraining: it was trained on retain data
    return record["acc_forget_test"] + 100.0 - record[FORGET_AGREEMENT]


OBJECTIVES = {o.name: o for o in (
    Objective(name="retrain-gap", needs_retrain=True, score=_retrain_gap),
    Objective(name="forget-only", needs_retrain=False, score=_forget_only),
)}


def trial_value(objective: Objective, *, records: list[dict[str, Any]],
                references: list[dict[str, Any] | None]) -> float | None:
    """The mean over forget sets; None when a cell failed or a score is not finite."""
    if any("error" in r for r in [*records, *(x for x in references if x)]):
        return None
    values = [objective.score(r, ref) for r, ref in zip(records, references)]
    mean = sum(values) / len(values)
    return mean if math.isfinite(mean) else None


@torch.no_grad()
def forget_agreement(model: torch.nn.Module, original: torch.nn.Module, *, forget: Iterable,
                     forget_classes: tuple[int, ...], device: torch.device) -> float:
    """Percent of the ``forget`` samples that ``model`` assigns to the retain class
    ``original`` ranks first among the retain classes (the forget-only objective's utility);
    NaN without samples."""
    logits, _ = predict_logits(model, forget, device=device)
    reference, _ = predict_logits(original, forget, device=device)
    if len(logits) == 0:
        return float("nan")
    reference[:, list(forget_classes)] = -math.inf
    return 100.0 * float((logits.argmax(1) == reference.argmax(1)).float().mean())
