"""The metrics beyond the paper on constructed inputs with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.data import TensorBatches
from bench.metrics.distance import activation_distance, js_divergence, weight_distance
from bench.metrics.privacy import (
    LOW_FPRS,
    logit_confidence,
    per_sample_loss,
    population_attack,
    threshold_attack,
    tpr_at_fpr,
)
from bench.metrics.probe import (
    balanced_subset,
    classifier_head,
    penultimate_features,
    probe_accuracy,
)
from bench.metrics.relearn import RelearnSettings, mean_loss, relearn_steps

# ---------------------------------------------------------------- per-example attack


def test_separable_scores_give_auc_1_and_identical_distributions_about_half():
    members, nonmembers = np.arange(100, 200.0), np.arange(0, 100.0)
    assert threshold_attack(members, nonmembers).auc == 1.0
    assert threshold_attack(nonmembers, members).auc == 0.0  # members look like non-members
    rng = np.random.default_rng(0)
    same = threshold_attack(rng.normal(size=5000), rng.normal(size=5000))
    assert same.auc == pytest.approx(0.5, abs=0.02)


def test_tpr_at_fpr_on_a_hand_made_roc():
    # Thresholds from high to low: FPR 0, 0.005, 0.01, 0.02 with TPR 0.2, 0.5, 0.6, 0.9.
    fpr = np.array([0.0, 0.005, 0.01, 0.02, 1.0])
    tpr = np.array([0.2, 0.5, 0.6, 0.9, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.01) == 0.6
    assert tpr_at_fpr(fpr, tpr, 0.001) == 0.2
    assert tpr_at_fpr(fpr, tpr, 0.015) == 0.6


def test_tpr_at_one_percent_fpr_from_scores():
    # 1,000 non-members at 0..999; members: 30 above every non-member, 70 between the 10
    # highest non-members and the rest. At FPR <= 1 % (10 false positives) all 100 members
    # are caught; at 0.1 % (1 false positive) only the 30.
    nonmembers = np.arange(1000.0)
    members = np.concatenate([np.full(30, 2000.0), np.full(70, 989.5)])
    result = threshold_attack(members, nonmembers)
    assert result.tpr["forget_mia_tpr_1fpr"] == pytest.approx(1.0)
    assert math.isnan(result.tpr["forget_mia_tpr_01fpr"])  # needs 10,000 non-members
    assert "10000" in result.notes["forget_mia_tpr_01fpr"]


def test_too_few_nonmembers_give_nan_with_the_reason():
    result = threshold_attack(np.ones(50), np.zeros(53))
    for name in LOW_FPRS:
        assert math.isnan(result.tpr[name])
        assert "53 non-members" in result.notes[name]
    assert result.auc == 1.0  # the AUC needs no threshold resolution
    # The stored ROC curve leaves out FPRs finer than one non-member.
    assert all(t is None for t in result.roc_tpr[:5])
    assert result.roc_tpr[-1] == 1.0


def test_logit_confidence_is_stable_and_exact_on_extreme_logits():
    logits = torch.tensor([[50.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1e4, 3.0, 1.0],
                           [200.0, 100.0, -1e4]])
    labels = torch.tensor([0, 0, 0, 0])
    conf = logit_confidence(logits, labels)
    assert np.isfinite(conf).all()
    # z_y - logsumexp of the others, worked out by hand.
    assert conf[0] == pytest.approx(50.0 - math.log(2), rel=1e-12)   # p_y rounds to 1
    assert conf[1] == pytest.approx(-math.log(2))                       # p = 1/3: log(1/2)
    assert conf[2] == pytest.approx(-1e4 - (3.0 + math.log1p(math.exp(-2.0))), rel=1e-12)
    assert conf[3] == pytest.approx(100.0, rel=1e-12)
    # The naive formula loses it where p_y rounds to 1 in float32.
    p = torch.softmax(logits[:1], 1)[0, 0]
    assert not math.isfinite(float(torch.log(p) - torch.log1p(-p)))


def test_per_sample_loss_matches_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    loss = per_sample_loss(logits, torch.tensor([0, 1]))
    assert loss == pytest.approx([math.log(2), 2.0 + math.log1p(math.exp(-2.0))])


def test_population_attack_is_the_kits_cross_validated_accuracy():
    rng = np.random.default_rng(0)
    separable = population_attack(rng.uniform(10, 30, 120), rng.uniform(0, 0.1, 500))
    assert separable == 100.0
    same = population_attack(rng.exponential(size=400), rng.exponential(size=400))
    assert 35.0 < same < 65.0
    assert math.isnan(population_attack(np.ones(5), np.zeros(100)))


# ---------------------------------------------------------------- distances


def test_js_of_identical_outputs_is_0_and_of_disjoint_one_hots_ln2():
    logits = torch.randn(20, 10, generator=torch.Generator().manual_seed(0))
    assert js_divergence(logits, logits.clone()) == 0.0
    one_hot_a = torch.tensor([[1e4, 0.0], [0.0, 1e4]])
    one_hot_b = torch.tensor([[0.0, 1e4], [1e4, 0.0]])
    assert js_divergence(one_hot_a, one_hot_b) == pytest.approx(math.log(2), rel=1e-9)
    assert activation_distance(one_hot_a, one_hot_b) == pytest.approx(math.sqrt(2))
    assert activation_distance(logits, logits) == 0.0
    assert math.isnan(js_divergence(torch.empty(0, 3), torch.empty(0, 3)))


def test_weight_distance_is_0_to_itself_and_relative_otherwise():
    model = nn.Linear(3, 2)
    assert weight_distance(model, model) == 0.0
    twice = nn.Linear(3, 2)
    with torch.no_grad():
        for mine, theirs in zip(twice.parameters(), model.parameters()):
            mine.copy_(2 * theirs)
    assert weight_distance(twice, model) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="parameter names differ"):
        weight_distance(nn.Sequential(nn.Linear(3, 2)), model)


# ---------------------------------------------------------------- probe


def test_probe_on_linearly_separable_features_is_100():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    labels = np.repeat(np.arange(4), 30)
    features = centres[labels] + rng.normal(scale=0.5, size=(120, 4))
    test_labels = np.full(20, 2)
    test = centres[test_labels] + rng.normal(scale=0.5, size=(20, 4))
    assert probe_accuracy(train_features=features, train_labels=labels, test_features=test,
                          test_labels=test_labels, seed=0) == 100.0


def test_penultimate_features_are_the_input_of_the_last_linear_layer():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    features, labels = penultimate_features(
        model, TensorBatches(x, torch.arange(10) % 3, batch_size=4, shuffle=False),
        device=torch.device("cpu"))
    with torch.no_grad():
        assert np.allclose(features, torch.relu(model[0](x)).numpy())
    assert labels.tolist() == (torch.arange(10) % 3).tolist()
    assert not model[2]._forward_pre_hooks  # the hook is removed again
    with pytest.raises(ValueError, match="no nn.Linear"):
        classifier_head(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_balanced_subset_is_fixed_by_seed_and_balanced():
    targets = np.array([0] * 30 + [1] * 12 + [2] * 50)
    subset = balanced_subset(targets, per_class=20, seed=3)
    assert np.bincount(targets[subset]).tolist() == [12, 12, 12]
    assert np.array_equal(subset, balanced_subset(targets, per_class=20, seed=3))
    assert not np.array_equal(subset, balanced_subset(targets, per_class=20, seed=4))


# ---------------------------------------------------------------- relearn


def _toy_batches(seed: int = 0) -> TensorBatches:
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(seed))
    return TensorBatches(x, (x[:, 0] > 0).long(), batch_size=16, shuffle=True, seed=seed)


def test_relearn_is_0_steps_when_already_at_the_target_and_capped_when_unreachable():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    batches = _toy_batches()
    x, y = next(iter(batches))
    settings = RelearnSettings(cap=7)
    assert relearn_steps(model, batches=batches, forget_x=x, forget_y=y,
                         target_loss=math.inf, settings=settings) == (0, False)
    assert relearn_steps(model, batches=batches, forget_x=x, forget_y=y,
                         target_loss=-1.0, settings=settings) == (7, True)


def test_relearn_counts_the_steps_to_the_target_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = _toy_batches()
    x, y = batches.x, batches.y
    target = mean_loss(model, x, y) * 0.9
    steps, capped = relearn_steps(model, batches=batches, forget_x=x, forget_y=y,
                                  target_loss=target, settings=RelearnSettings(lr=0.05))
    assert not capped and 0 < steps < 100
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="at least one batch"):
        relearn_steps(model, batches=[], forget_x=x, forget_y=y, target_loss=-1.0,
                      settings=RelearnSettings())


def test_tradeoff_gaps_are_taken_against_the_retraining_of_the_same_cell():
    import pandas as pd

    from bench.report.privacy_figures import gap_frame

    rows = []
    for seed, (retrain_dr, retrain_auc) in enumerate([(90.0, 0.50), (80.0, 0.60)]):
        for classes in ("2", "6"):
            base = {"dataset": "d", "arch": "a", "forget_classes": classes, "seed": seed}
            rows.append({**base, "method": "retrain", "acc_retain_test": retrain_dr,
                         "forget_mia_auc": retrain_auc})
            rows.append({**base, "method": "m", "acc_retain_test": retrain_dr - 3.0,
                         "forget_mia_auc": retrain_auc + (0.1 if classes == "2" else 0.3)})
    gaps = gap_frame(pd.DataFrame(rows)).set_index(["method", "seed"])
    assert gaps.loc[("m", 0), "utility_gap"] == pytest.approx(3.0)
    assert gaps.loc[("m", 1), "forgetting_gap"] == pytest.approx(0.2)   # (0.1 + 0.3) / 2
    assert gaps.loc[("retrain", 0), "utility_gap"] == 0.0
