"""The metrics beyond the paper's, for one cell, computed from the models the worker holds.

Four groups, each timed (``metric_<group>_s`` in the record's ``timings``):
- ``attack``: the per-example attack on the forget class and the challenge kit's population
  attack (``privacy.py``);
- ``distance``: output and weight distances to the retrained model of the same seed and forget
  set (``distance.py``);
- ``probe``: linear-probe recovery of the forget classes from frozen features (``probe.py``);
- ``relearn``: steps of fine-tuning until the forget loss is back (``relearn.py``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.data import ImageData, class_indices, make_loader
from bench.metrics.distance import activation_distance, js_divergence, weight_distance
from bench.metrics.evaluate import Logits, predict_logits
from bench.metrics.privacy import (
    ROC_FPRS,
    logit_confidence,
    per_sample_loss,
    population_attack,
    threshold_attack,
)
from bench.metrics.probe import (
    PROBE_C,
    PROBE_PER_CLASS,
    balanced_subset,
    penultimate_features,
    probe_accuracy,
    subset_digest,
)
from bench.metrics.relearn import RelearnSettings, mean_loss, relearn_steps

DISTANCE_SPLITS = ("forget_train", "forget_test", "retain_test")


@dataclass(frozen=True, kw_only=True)
class CellInputs:
    """What the metrics need to know about the cell besides its models."""

    data: ImageData
    forget_classes: tuple[int, ...]
    seed: int
    device: torch.device
    eval_batch_size: int


def attack_metrics(logits: Logits, *, seed: int) -> dict[str, Any]:
    """Per-example attack (members: forget-train, non-members: forget-test; score: the
    logit-scaled confidence) and the population attack (forget-train vs all test samples;
    score: the loss)."""
    result = threshold_attack(logit_confidence(*logits["forget_train"]),
                              logit_confidence(*logits["forget_test"]))
    test_losses = np.concatenate([per_sample_loss(*logits["forget_test"]),
                                  per_sample_loss(*logits["retain_test"])])
    return {"forget_mia_auc": result.auc, **result.tpr,
            "population_mia_acc": population_attack(per_sample_loss(*logits["forget_train"]),
                                                    test_losses, seed=seed),
            "forget_mia_roc": {"fpr": list(ROC_FPRS), "tpr": result.roc_tpr},
            "metric_notes": result.notes}


def distance_metrics(*, model: nn.Module, retrained: nn.Module, logits: Logits,
                     reference_logits: Logits) -> dict[str, float]:
    return {"js_forget": js_divergence(logits["forget_test"][0],
                                       reference_logits["forget_test"][0]),
            "js_retain": js_divergence(logits["retain_test"][0],
                                       reference_logits["retain_test"][0]),
            "activation_distance": activation_distance(logits["forget_train"][0],
                                                       reference_logits["forget_train"][0]),
            "weight_distance": weight_distance(model, retrained)}


def probe_metrics(model: nn.Module, inputs: CellInputs) -> dict[str, Any]:
    """Probe fitted on a class-balanced training subset fixed by (dataset, seed), scored on the
    forget-test samples."""
    data = inputs.data
    subset = balanced_subset(data.train_targets, per_class=PROBE_PER_CLASS, seed=inputs.seed)
    forget_test = class_indices(data.test_targets, inputs.forget_classes, include=True)

    def features(dataset, indices):
        loader = make_loader(dataset, indices, batch_size=inputs.eval_batch_size,
                             shuffle=False, device=inputs.device)
        return penultimate_features(model, loader, device=inputs.device)

    train_x, train_y = features(data.train, subset)
    test_x, test_y = features(data.test, forget_test)
    accuracy = probe_accuracy(train_features=train_x, train_labels=train_y,
                              test_features=test_x, test_labels=test_y, seed=inputs.seed)
    return {"probe_forget_acc": accuracy, "metric_settings": {"probe": {
        "per_class": len(subset) // len(np.unique(data.train_targets)), "n": len(subset),
        "C": PROBE_C, "indices_sha1": subset_digest(subset)}}}


def relearn_metrics(*, model: nn.Module, original: nn.Module, inputs: CellInputs,
                    settings: RelearnSettings | None = None) -> dict[str, Any]:
    """Steps until the forget loss on a fixed forget-train subset is at most the original's
    there; every draw is seeded by the cell's seed."""
    settings = settings or RelearnSettings()
    data, device = inputs.data, inputs.device
    rng = np.random.default_rng(inputs.seed)
    forget = class_indices(data.train_targets, inputs.forget_classes, include=True)
    probe_set = np.sort(rng.permutation(forget)[:settings.eval_samples])
    forget_x, forget_y = next(iter(make_loader(data.train, probe_set,
                                               batch_size=len(probe_set), shuffle=False,
                                               device=device)))
    mixed = rng.choice(len(data.train_targets), settings.samples, replace=True)
    batches = make_loader(data.train, mixed, batch_size=settings.batch_size, shuffle=True,
                          seed=inputs.seed, device=device)
    torch.manual_seed(inputs.seed)
    steps, capped = relearn_steps(model, batches=batches, forget_x=forget_x.to(device),
                                  forget_y=forget_y.to(device),
                                  target_loss=mean_loss(original, forget_x.to(device),
                                                        forget_y.to(device)),
                                  settings=settings)
    notes = ({"relearn_steps": f"capped: the forget loss was still above the original's "
                               f"after {settings.cap} steps"} if capped else {})
    return {"relearn_steps": float(steps), "metric_notes": notes,
            "metric_settings": {"relearn": settings.as_dict()}}


def _timed(timings: dict[str, float], group: str, compute, *args, **kwargs) -> dict[str, Any]:
    start = time.perf_counter()
    out = compute(*args, **kwargs)
    timings[f"metric_{group}_s"] = time.perf_counter() - start
    return out


def _merged(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """One dict from the groups' outputs; their notes and settings are merged, not replaced."""
    out: dict[str, Any] = {"metric_notes": {}, "metric_settings": {}}
    for group in groups:
        for key, value in group.items():
            if key in ("metric_notes", "metric_settings"):
                out[key].update(value)
            else:
                out[key] = value
    return out


def extended_metrics(*, model: nn.Module, original: nn.Module, retrained: nn.Module,
                     logits: Logits, loaders: dict, inputs: CellInputs,
                     is_original: bool) -> dict[str, Any]:
    """Every metric beyond the paper's for ``model``, with ``metric_notes`` (why a value is
    NaN or capped), ``metric_settings`` (probe subset, relearn recipe), the stored ROC curve
    and ``metric_timings``. ``retrained`` may be ``model`` itself (the retrain cell)."""
    timings: dict[str, float] = {}

    def reference_logits() -> Logits:
        if retrained is model:  # retraining scored against itself: the very same outputs
            return logits
        return {name: predict_logits(retrained, loaders[name], device=inputs.device)
                for name in DISTANCE_SPLITS}

    groups = [
        _timed(timings, "attack", attack_metrics, logits, seed=inputs.seed),
        _timed(timings, "distance", lambda: distance_metrics(
            model=model, retrained=retrained, logits=logits,
            reference_logits=reference_logits())),
        _timed(timings, "probe", probe_metrics, model, inputs),
        # The original defines the target loss: it relearns in 0 steps by definition.
        ({"relearn_steps": 0.0} if is_original else
         _timed(timings, "relearn", relearn_metrics, model=model, original=original,
                inputs=inputs)),
    ]
    return {**_merged(groups), "metric_timings": timings}
