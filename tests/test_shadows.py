"""Shadow-model privacy (--shadows K): the challenge's ε and F, U-LiRA, and a tiny grid."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from helpers import OUT, write_grid

from bench import cli
from bench.errors import BenchInputError
from bench.harness.cells import grid_cells, pending_cells, runs_path
from bench.harness.grid import parse_grid
from bench.harness.store import append_record, read_records
from bench.metrics.forget_quality import (
    EPSILON_CAP,
    bucket_score,
    example_epsilon,
    forgetting_quality,
)
from bench.metrics.shadows import (
    MAX_SPLITS,
    SHADOW_FIELD,
    seed_halves,
    seed_splits,
    shadow_metrics,
    split_attack,
)
from bench.metrics.ulira import ulira_statistics


def _scores(models: int, examples: int = 40) -> np.ndarray:
    """[models, examples]: a per-example level (spread 3) plus each model's noise (spread 1)."""
    rng = np.random.default_rng(0)
    return rng.normal(size=examples) * 3 + rng.normal(size=(models, examples))


# ------------------------------------------------------------------ the challenge's ε and F


def test_identical_distributions_give_epsilon_0_and_the_maximum_f():
    scores = _scores(4)
    assert example_epsilon(scores[:, 0], scores[:, 0].copy()) == 0.0
    assert forgetting_quality(scores, scores.copy()) == 1.0


def test_separated_distributions_give_the_capped_epsilon_and_f_0():
    scores = _scores(4)
    assert example_epsilon(scores[:, 0] + 100, scores[:, 0]) == EPSILON_CAP
    assert forgetting_quality(scores + 100, scores) == 0.0


def test_a_peaky_side_gets_the_capped_epsilon_even_when_the_ranges_overlap():
    wide = np.array([-3.0, -1.0, 1.0, 3.0])
    peaky = np.array([0.0, 0.001, 0.002, 0.003])  # range under 1 % of the other's
    assert example_epsilon(wide, peaky) == EPSILON_CAP


def test_epsilon_of_a_hand_made_example():
    # 4 models a side, one overlap: "score >= 1.5" misses one positive (FNR 1/4) and admits no
    # negative (dropped: FPR 0); "score >= 0.5" admits all positives and one negative
    # (FNR 0: dropped). The interval rules can do no better than FPR = FNR = 1/4:
    # ε = ln(1 - δ - 1/4) - ln(1/4) = ln 3 (to δ).
    positive = np.array([1.0, 2.0, 3.0, 4.0])
    negative = np.array([-3.0, -2.0, -1.0, 1.0])
    assert example_epsilon(positive, negative) == pytest.approx(math.log(3), abs=1e-4)


def test_buckets_are_half_wide_up_to_ceil_ln_models_minus_1():
    # 8 models: ceil(ln 7) = 2, buckets [0, .5) [.5, 1) [1, 1.5) [1.5, 2) worth 1, 1/2, 1/4, 1/8.
    assert bucket_score(np.array([0.2, 0.7, 1.2, 1.7, 2.5]), models=8) == pytest.approx(
        (1 + 0.5 + 0.25 + 0.125 + 0) / 5)
    assert bucket_score(np.array([0.0]), models=2) == 0.0  # ln 1 = 0: no bucket at all


# ------------------------------------------------------------------ U-LiRA


def test_ulira_separates_separable_scores_and_holds_each_target_out():
    scores = _scores(6)  # six models of the same examples, moved apart by 10 on one side
    unlearned, retrained = scores[:3] + 10, scores[3:]
    members, nonmembers = ulira_statistics(unlearned, retrained)
    assert members.shape == nonmembers.shape == (3 * 40,)
    assert members.min() > nonmembers.max()
    with pytest.raises(ValueError, match="at least 3 models a side"):
        ulira_statistics(unlearned[:2], retrained[:2])


def test_shadow_metrics_of_a_separable_method_and_of_an_identical_one():
    retrained = _scores(8, examples=130)
    separable = shadow_metrics(method=retrained + 10, retrained=retrained)
    assert separable["shadow_auc"] == 1.0
    assert separable["forget_quality"] == 0.0
    # 8 seeds x 130 examples = 1,040 non-member pairs: enough for 1 % FPR, not for 0.1 %.
    assert separable["shadow_tpr_1fpr"] == 1.0
    assert math.isnan(separable["shadow_tpr_01fpr"])
    assert "needs at least 10000" in separable["notes"]["shadow_tpr_01fpr"]
    same = shadow_metrics(method=retrained[:, :40], retrained=retrained[:, :40].copy())
    # The halves are crossed, so even identical matrices compare different models: no leak.
    assert abs(same["shadow_auc"] - 0.5) < 0.1


def test_seed_splits_hold_each_split_once_and_sample_past_the_cap():
    splits = seed_splits(6)
    assert len(splits) == 10  # C(6, 3) / 2: a split and its mirror image are one
    assert splits[0] == seed_halves(6)
    assert len({frozenset(map(frozenset, split)) for split in splits}) == 10
    assert all(sorted(a + b) == list(range(6)) and len(a) == 3 for a, b in splits)
    many = seed_splits(12)  # 462 splits
    assert len(many) == MAX_SPLITS and many[0] == seed_halves(12)
    assert len({tuple(a) for a, _ in many}) == MAX_SPLITS
    assert many == seed_splits(12)  # seeded: the same splits every run


def test_the_mean_over_splits_reads_retraining_as_a_null_where_one_split_does_not():
    # Whole models differ: model i is i units more confident on every example. The first split
    # puts the 4 least confident on one side, and its attack "separates" retraining from itself.
    retrained = _scores(8) + np.arange(8.0)[:, None]
    assert split_attack(retrained, retrained.copy(), seed_halves(8)).auc > 0.9
    assert abs(shadow_metrics(method=retrained, retrained=retrained.copy())["shadow_auc"]
               - 0.5) < 0.03


# ------------------------------------------------------------------ grid and cells


RAW = {"name": "g", "seeds": [0, 9], "methods": ["finetune"],
       "experiments": [{"dataset": "digits", "arch": "smallcnn", "forget_classes": [[2]]}]}


def test_shadows_add_seeds_and_retraining_and_refuse_too_few():
    grid = parse_grid({**RAW, "shadows": 6})
    assert grid.seeds == (0, 1, 2, 3, 4, 5, 9)
    assert [m.label for m in grid.methods] == ["finetune", "retrain"]
    scored = {(c.label, c.seed) for c in grid_cells(grid) if c.shadow_scores}
    assert scored == {(m, s) for m in ("original", "finetune", "retrain") for s in range(6)}
    for bad in (4, 7):
        with pytest.raises(BenchInputError, match=f"shadows = {bad}: needs an even number"):
            parse_grid({**RAW, "shadows": bad})


def test_a_record_without_scores_is_pending_only_when_shadows_are_asked_for(tmp_path):
    grid = parse_grid({**RAW, "shadows": 6})
    path = runs_path(tmp_path, grid.name)
    path.parent.mkdir(parents=True)
    for cell in grid_cells(grid):
        append_record(path, {"cell": cell.key, "config_hash": cell.config_hash})
    cells, pending = pending_cells(grid, tmp_path)
    assert {c.key for c in pending} == {c.key for c in cells if c.shadow_scores}
    plain = parse_grid({**RAW, "seeds": list(range(6)) + [9], "methods": ["finetune", "retrain"]})
    assert pending_cells(plain, tmp_path)[1] == []


# ------------------------------------------------------------------ end to end

TINY = """\
name: tiny
seeds: [0]
methods: [retrain]
shadows: 6
experiments:
  - dataset: digits
    arch: smallcnn
    forget_classes: [[2]]
    train: {epochs: 1, batch_size: 64}
"""


def test_tiny_grid_with_shadows_tells_the_original_from_retraining(tmp_path, monkeypatch,
                                                                   caplog):
    write_grid(tmp_path, TINY, "tiny.yaml")
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO")
    assert cli.main(["--grid", "tiny.yaml", "--jobs", "1", *OUT]) == 0
    assert "shadow models: 12 of 12" in caplog.text
    records = list(read_records(tmp_path / "results" / "tiny" / "runs.jsonl"))
    assert len(records) == 12 and all(SHADOW_FIELD in r for r in records)
    with open(tmp_path / "results" / "tiny" / "shadows.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"original", "retrain"}
    assert float(rows["original"]["shadow_auc"]) > 0.9
    assert float(rows["original"]["shadow_auc"]) > float(rows["retrain"]["shadow_auc"]) + 0.2
    assert float(rows["original"]["forget_quality"]) < float(rows["retrain"]["forget_quality"])
    assert "U-LiRA AUC" in (tmp_path / "results" / "tiny" / "table.md").read_text()
    # Re-rendering reads the scores from the records: no model, no computation.
    (tmp_path / "results" / "tiny" / "shadows.csv").unlink()
    assert cli.main(["--grid", "tiny.yaml", "--render-only", *OUT]) == 0
    with open(tmp_path / "results" / "tiny" / "shadows.csv") as f:
        assert {r["method"]: r for r in csv.DictReader(f)} == rows
