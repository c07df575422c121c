"""Accuracy, softmax entropy and the entropy membership-inference attack."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.data import TensorBatches
from bench.metrics import (
    accuracy,
    entropy_mia,
    evaluate_splits,
    predict_logits,
    softmax_entropy,
)


def test_accuracy_in_percent():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 2, 1])) == pytest.approx(75.0)
    assert accuracy(logits, torch.tensor([1, 0, 0, 2])) == 0.0
    assert accuracy(logits, torch.tensor([0, 1, 2, 0])) == 100.0


def test_accuracy_of_an_empty_set_is_nan():
    assert math.isnan(accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.int64)))


def test_softmax_entropy():
    uniform = torch.zeros(2, 10)
    assert softmax_entropy(uniform) == pytest.approx([math.log(10)] * 2, rel=1e-6)
    confident = torch.tensor([[100.0, 0.0, 0.0]])
    assert softmax_entropy(confident)[0] == pytest.approx(0.0, abs=1e-6)
    two_way = torch.tensor([[0.0, 0.0, -1e4]])  # 50/50 between two classes
    assert softmax_entropy(two_way)[0] == pytest.approx(math.log(2), rel=1e-6)
    # Invariant to adding a constant to all logits; float64/half inputs accepted.
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    assert np.allclose(softmax_entropy(logits), softmax_entropy(logits + 7.0), atol=1e-5)
    assert softmax_entropy(logits.double()).shape == (5,)


def test_predict_logits_concatenates_batches_in_order():
    model = nn.Linear(3, 2)
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    y = torch.arange(10) % 2
    loader = TensorBatches(x, y, batch_size=4, shuffle=False)
    logits, labels = predict_logits(model, loader, device=torch.device("cpu"))
    assert torch.equal(labels, y)
    with torch.no_grad():
        assert torch.allclose(logits, model(x))
    empty_logits, empty_labels = predict_logits(model, [], device=torch.device("cpu"))
    assert empty_logits.numel() == 0 and empty_labels.numel() == 0


# ---------------------------------------------------------------- membership attack


def _fit_mlp(x: torch.Tensor, y: torch.Tensor, *, seed: int, steps: int = 300) -> nn.Module:
    """An over-parameterised MLP trained full-batch until it has memorised (x, y)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 512), nn.ReLU(),
                          nn.Linear(512, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_entropy_mia_scores_memorised_members_above_unseen_samples(digits_data):
    """A model's own training samples are called "member" far more often than samples it never
    saw. Per repetition: model A memorises 60 samples; its attack is trained on 20 of them and
    applied to the other 40. Model B memorises 60 different samples and is attacked on the same
    40 targets, which it never saw."""
    x, y = digits_data.train.tensors
    x_test = digits_data.test.tensors[0]
    on_members, on_unseen = [], []
    for rep in range(3):
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(rep))
        set_a, set_b = perm[:60], perm[60:120]
        shadow, targets = set_a[:20], set_a[20:]
        model_a = _fit_mlp(x[set_a], y[set_a], seed=rep)
        model_b = _fit_mlp(x[set_b], y[set_b], seed=100 + rep)
        with torch.no_grad():
            assert accuracy(model_a(x[set_a]), y[set_a]) == 100.0  # it did memorise
            on_members.append(entropy_mia(member_logits=model_a(x[shadow]),
                                          nonmember_logits=model_a(x_test),
                                          target_logits=model_a(x[targets]), seed=rep))
            on_unseen.append(entropy_mia(member_logits=model_b(x[set_b[:20]]),
                                         nonmember_logits=model_b(x_test),
                                         target_logits=model_b(x[targets]), seed=rep))
    assert min(on_members) >= 90.0, on_members
    assert np.mean(on_members) - np.mean(on_unseen) >= 20.0, (on_members, on_unseen)


def test_entropy_mia_separates_confident_from_uncertain_outputs():
    gen = torch.Generator().manual_seed(0)
    confident = torch.randn(200, 10, generator=gen) + 30 * F.one_hot(torch.arange(200) % 10, 10)
    uncertain = 0.1 * torch.randn(200, 10, generator=gen)
    assert entropy_mia(member_logits=confident, nonmember_logits=uncertain,
                       target_logits=confident[:50] + 0.01) == 100.0
    assert entropy_mia(member_logits=confident, nonmember_logits=uncertain,
                       target_logits=uncertain[:50] * 1.01) == 0.0


def test_entropy_mia_balances_subsamples_and_is_seeded():
    gen = torch.Generator().manual_seed(1)
    members = torch.randn(3000, 10, generator=gen) * 3
    nonmembers = torch.randn(40, 10, generator=gen)
    targets = torch.randn(100, 10, generator=gen) * 2
    first = entropy_mia(member_logits=members, nonmember_logits=nonmembers,
                        target_logits=targets, seed=3)
    again = entropy_mia(member_logits=members, nonmember_logits=nonmembers,
                        target_logits=targets, seed=3)
    assert first == again and 0.0 <= first <= 100.0
    assert math.isnan(entropy_mia(member_logits=members, nonmember_logits=nonmembers,
                                  target_logits=torch.empty(0, 10)))
    assert math.isnan(entropy_mia(member_logits=torch.empty(0, 10),
                                  nonmember_logits=nonmembers, target_logits=targets))


def test_evaluate_splits_reports_every_metric_for_a_known_model():
    """A model that always predicts class 0: 100 % on class-0 subsets, 0 % elsewhere."""
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))

    def loader(label: int, n: int = 8):
        return TensorBatches(torch.randn(n, 4), torch.full((n,), label), batch_size=3,
                             shuffle=False)

    out = evaluate_splits(model, forget_train=loader(0), retain_train=loader(1),
                          forget_test=loader(0), retain_test=loader(2),
                          device=torch.device("cpu"))
    assert out["acc_forget_train"] == 100.0 and out["acc_forget_test"] == 100.0
    assert out["acc_retain_train"] == 0.0 and out["acc_retain_test"] == 0.0
    assert 0.0 <= out["mia"] <= 100.0
