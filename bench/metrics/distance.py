"""Distances from a model to the retrained model of the same seed and forget set.

The suite retrains from the original model's exact initial weights (``methods/retrain.py``:
the harness reseeds torch with the cell's seed right before ``make_model``, as it does before
building the original), so parameters of the two models are comparable one to one and the
weight distance means "how far from where retraining went".
"""
from __future__ import annotations

import math

import torch
from torch import nn


def js_divergence(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Mean Jensen-Shannon divergence (natural log, in [0, ln 2]) between the softmax outputs
    of two models on the same samples; NaN for no samples.

    JS(p, q) = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2 (Lin, IEEE Trans. Inf. Theory
    1991), the output distance of Chundawat et al. (Bad Teaching, AAAI 2023). Computed in float64
    with m formed in probability space, so identical outputs give exactly 0.
    """
    if len(logits_a) == 0:
        return math.nan
    p = torch.softmax(logits_a.double(), dim=1)
    q = torch.softmax(logits_b.double(), dim=1)
    m = (p + q) / 2

    def kl_to_m(x: torch.Tensor) -> torch.Tensor:
        return (torch.special.xlogy(x, x) - torch.special.xlogy(x, m)).sum(1)

    # Rounding can leave a per-sample value a hair below 0; the divergence never is.
    return float(((kl_to_m(p) + kl_to_m(q)) / 2).clamp_min(0).mean())


def activation_distance(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Mean L2 distance between the softmax outputs of two models on the same samples (the
    "activation distance" of Chundawat et al., Bad Teaching, AAAI 2023, on the forget set;
    in [0, sqrt 2]); NaN for no samples."""
    if len(logits_a) == 0:
        return math.nan
    p = torch.softmax(logits_a.double(), dim=1)
    q = torch.softmax(logits_b.double(), dim=1)
    return float(torch.linalg.vector_norm(p - q, dim=1).mean())


def weight_distance(model: nn.Module, reference: nn.Module) -> float:
    """||w - w_ref|| / ||w_ref|| over all parameters (buffers such as BatchNorm statistics
    excluded), in float64. The models must share an architecture."""
    ours = dict(model.named_parameters())
    theirs = dict(reference.named_parameters())
    if ours.keys() != theirs.keys():
        raise ValueError("weight distance needs two models of one architecture; the parameter "
                         f"names differ: {sorted(ours.keys() ^ theirs.keys())[:5]}")
    diff = sum(float((ours[k].detach().double().cpu() - theirs[k].detach().double().cpu())
                     .square().sum()) for k in ours)
    norm = sum(float(p.detach().double().cpu().square().sum()) for p in theirs.values())
    return math.sqrt(diff) / math.sqrt(norm) if norm > 0 else math.nan
