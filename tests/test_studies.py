"""The validation studies behind built-in settings: their gap table, and that they never read
the test split."""
from __future__ import annotations

import pytest

from studies import pbu_pairs, pbu_rule
from studies.sweep import gaps


def _record(method, forget, seed, a_df, a_dr):
    return {"method": method, "dataset": "digits", "forget_classes": forget, "seed": seed,
            "acc_forget_test": a_df, "acc_retain_test": a_dr}


def test_gaps_pair_each_cell_with_the_retraining_of_its_own_seed_and_forget_set():
    records = [_record("retrain", "2", 0, 0.0, 99.0), _record("retrain", "2", 1, 0.0, 90.0),
               _record("retrain", "6", 0, 0.0, 98.0),
               _record("a", "2", 0, 4.0, 97.0), _record("a", "2", 1, 0.0, 90.0),
               _record("a", "6", 0, 0.0, 98.0),
               _record("b", "2", 0, 0.0, 99.0), _record("b", "2", 1, 1.0, 91.0),
               _record("b", "6", 0, 0.0, 98.0)]
    table = gaps(records)
    assert list(table.index) == ["b", "a"]               # sorted by the mean gap
    assert table.loc["a", ("gap", "digits")] == pytest.approx(2.0)    # (6 + 0 + 0) / 3
    assert table.loc["a", ("worst", "digits")] == pytest.approx(6.0)
    assert table.loc["b", ("gap", "digits")] == pytest.approx(2.0 / 3, abs=0.01)


@pytest.mark.parametrize("study", [pbu_rule, pbu_pairs])
def test_studies_run_on_validation_views_only(study):
    grid = study.study_grid()
    assert grid.experiments and all(exp.validation for exp in grid.experiments)
    assert all(exp.test_per_class is None for exp in grid.experiments)
    assert grid.methods[0].label == "retrain"
