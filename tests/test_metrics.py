"""Accuracy, softmax entropy and the entropy membership-inference attack."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.svm import SVC
from torch import nn

from bench.data import TensorBatches
from bench.metrics.evaluate import (
    accuracy,
    collapse_warnings,
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


class SpySVC:
    """Stands in for sklearn's SVC: records what the attack is fitted on."""

    fits: ClassVar[list[tuple[np.ndarray, np.ndarray]]] = []

    def __init__(self, **kwargs):
        self.svc = SVC(**kwargs)

    def fit(self, features, targets):
        type(self).fits.append((np.array(features), np.array(targets)))
        self.svc.fit(features, targets)
        return self

    def predict(self, features):
        return self.svc.predict(features)


@pytest.fixture
def spy_svc(monkeypatch):
    import sklearn.svm

    SpySVC.fits = []
    monkeypatch.setattr(sklearn.svm, "SVC", SpySVC)
    return SpySVC.fits


@pytest.mark.parametrize(("n_members", "n_nonmembers", "cap", "expected"),
                         [(3000, 40, 2000, 40), (30, 500, 2000, 30), (300, 200, 50, 50)])
def test_entropy_mia_fits_on_equal_subsamples_of_both_sides(spy_svc, n_members, n_nonmembers,
                                                            cap, expected):
    gen = torch.Generator().manual_seed(1)
    members = torch.randn(n_members, 10, generator=gen) * 3
    nonmembers = torch.randn(n_nonmembers, 10, generator=gen)
    entropy_mia(member_logits=members, nonmember_logits=nonmembers,
                target_logits=torch.randn(20, 10, generator=gen), max_per_side=cap, seed=3)
    ((features, targets),) = spy_svc
    assert features.shape == (2 * expected, 1)
    assert targets.tolist() == [1.0] * expected + [0.0] * expected
    # Each side is a subsample without replacement of its own entropies.
    member_h, nonmember_h = softmax_entropy(members), softmax_entropy(nonmembers)
    assert np.isin(features[:expected, 0], member_h).all()
    assert np.isin(features[expected:, 0], nonmember_h).all()
    assert len(set(features[:expected, 0])) == expected
    assert len(set(features[expected:, 0])) == expected


def test_entropy_mia_balancing_changes_the_answer():
    """Overlapping entropy distributions, 3,000 members (logit scale 2) against 40 non-members
    (scale 1), attacked on fresh non-member-like outputs: an SVC fitted on all 3,040 samples
    calls every target "member" (a 75:1 prior); balanced subsamples call most of them
    non-members."""
    gen = torch.Generator().manual_seed(0)
    members = 2 * torch.randn(3000, 10, generator=gen)
    nonmembers = torch.randn(40, 10, generator=gen)
    targets = torch.randn(200, 10, generator=gen)
    h = lambda logits: softmax_entropy(logits)[:, None]
    unbalanced = SVC(C=3, gamma="auto", kernel="rbf").fit(
        np.concatenate([h(members), h(nonmembers)]),
        np.concatenate([np.ones(3000), np.zeros(40)]))
    assert 100.0 * unbalanced.predict(h(targets)).mean() == 100.0
    for seed in range(3):
        assert entropy_mia(member_logits=members, nonmember_logits=nonmembers,
                           target_logits=targets, seed=seed) < 25.0


def test_entropy_mia_is_seeded_and_empty_sides_give_nan(spy_svc):
    gen = torch.Generator().manual_seed(1)
    members = torch.randn(3000, 10, generator=gen) * 3
    nonmembers = torch.randn(40, 10, generator=gen)
    targets = torch.randn(100, 10, generator=gen) * 2
    kwargs = {"member_logits": members, "nonmember_logits": nonmembers, "target_logits": targets}
    first = entropy_mia(**kwargs, seed=3)
    again = entropy_mia(**kwargs, seed=3)
    entropy_mia(**kwargs, seed=4)
    assert first == again
    (f3, _), (f3_again, _), (f4, _) = spy_svc
    assert np.array_equal(f3, f3_again)
    assert not np.array_equal(f3[:40], f4[:40])  # another seed, other member subsample
    assert math.isnan(entropy_mia(member_logits=members, nonmember_logits=nonmembers,
                                  target_logits=torch.empty(0, 10)))
    assert math.isnan(entropy_mia(member_logits=torch.empty(0, 10),
                                  nonmember_logits=nonmembers, target_logits=targets))
    assert len(spy_svc) == 3  # no attack is fitted when a side is empty


def _two_feature_model() -> nn.Module:
    """logits = (5 x0, 5 x1, 0): x = (2, 0) is a confident class 0, (0.1, 0) an unsure one."""
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.0, 0.0]]))
        model.bias.zero_()
    return model


def _batches(point: tuple[float, float], label: int, n: int = 8) -> TensorBatches:
    return TensorBatches(torch.tensor([point] * n), torch.full((n,), label), batch_size=3,
                         shuffle=False)


@pytest.mark.parametrize(("forget_point", "mia"), [((2.0, 0.0), 100.0), ((0.1, 0.0), 0.0)])
def test_evaluate_splits_reports_every_metric_for_a_known_model(forget_point, mia):
    """Members (retain-train) are confident, non-members (test) unsure: the forget-train samples
    are called members exactly when the model is as confident on them. Class 0 is predicted
    for both forget points, class 1 for every retain point."""
    out = evaluate_splits(_two_feature_model(), forget_train=_batches(forget_point, 0),
                          retain_train=_batches((0.0, 2.0), 1),
                          forget_test=_batches((0.1, 0.0), 0),
                          retain_test=_batches((0.0, 0.1), 2), device=torch.device("cpu"))
    assert out == {"acc_forget_train": 100.0, "acc_retain_train": 100.0,
                   "acc_forget_test": 100.0, "acc_retain_test": 0.0, "mia": mia,
                   "warnings": []}


def test_collapse_onto_another_class_is_a_warning_and_the_forget_class_itself_is_not():
    labels = torch.full((20,), 2)
    onto_7 = torch.zeros(20, 10)
    onto_7[:, 7] = 5.0
    (warning,) = collapse_warnings(onto_7, labels)
    assert warning.startswith("collapse: 100 % of the forget samples are predicted as class 7")
    kept = torch.zeros(20, 10)
    kept[:, 2] = 5.0            # the original model: it still predicts the forget class
    assert collapse_warnings(kept, labels) == []
    spread = torch.zeros(20, 10)
    spread[:10, 3], spread[10:, 5] = 5.0, 5.0   # forgotten onto two neighbours: fine
    assert collapse_warnings(spread, labels) == []
    assert collapse_warnings(torch.full((20, 10), float("nan")), labels) == [
        "non-finite outputs on the forget samples"]
