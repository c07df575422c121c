"""The paper's methods unlearn on digits; PBU rejects bad inputs instead of returning garbage.

Methods run through ``bench.harness.execute.run_cell`` with the ``quick`` grid's settings (its
tuned file) on a smallcnn trained for 8 epochs (cached for the session), forgetting class 2.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from helpers import PAPER_METHODS, find_cell

from bench.data import TensorBatches, class_indices
from bench.harness.cells import Cell, pending_cells
from bench.harness.config import RunConfig
from bench.harness.execute import run_cell, run_grid
from bench.harness.grid import Grid, MethodSpec
from bench.harness.store import read_records
from bench.metrics import METRIC_NAMES
from methods import PBU, UnlearningTask, get_method

METRIC_KEYS = METRIC_NAMES


def finite_or_explained(record: dict, name: str) -> bool:
    """A metric is finite, or NaN with its reason in ``metric_notes`` (too few samples)."""
    return math.isfinite(record[name]) or name in record["metric_notes"]


def run_method(unit_grid, run_cfg, label: str, classes=(2,)) -> dict:
    record = run_cell(find_cell(unit_grid, label, classes), run_cfg, curves=False)
    assert "error" not in record, record.get("traceback")
    return record


def test_original_model_is_good(original_record):
    assert original_record["acc_forget_test"] >= 90
    assert original_record["acc_retain_test"] >= 90


# The quick grid runs every tunable method with the values of its committed tuned file and the
# baselines at their published settings as labelled variants (issue 15). UNSIR's tuned
# setting does not both forget and keep the rest on digits (its validation gap to retraining
# is the largest of the four; README: Tuning), so it is checked for forgetting only.
FORGETTING_METHODS = [m for m in PAPER_METHODS if m != "fast_effective"]
# The published settings on digits' ~1,300 training images: Bad Teaching (Adam 1e-4, one
# epoch: ~6 steps) barely moves the model; UNSIR's impair set is ~80 % noise at lr 0.02,
# which its 5 repair steps do not undo. Each is checked for what it does here.
PUBLISHED_BEHAVIOUR = {
    # label: (forgets: A_Df <= 10, keeps the rest: A_Dr within 8 points of the original)
    "bad_teaching_paper": (False, True),
    "fast_effective_paper": (True, False),
}


@pytest.mark.parametrize("label", FORGETTING_METHODS)
def test_paper_method_forgets_and_keeps_the_rest(label, unit_grid, run_cfg, original_record):
    record = run_method(unit_grid, run_cfg, label)
    assert record["acc_forget_test"] <= 10.0, record["acc_forget_test"]
    assert record["acc_retain_test"] >= original_record["acc_retain_test"] - 8.0
    assert all(finite_or_explained(record, k) for k in METRIC_KEYS)
    # The record carries the resolved hyperparameters and where each came from.
    assert record["params"] == unit_grid.experiments[0].params[label]
    assert record["param_sources"] == unit_grid.experiments[0].param_sources[label]


def test_tuned_unsir_forgets(unit_grid, run_cfg):
    record = run_method(unit_grid, run_cfg, "fast_effective")
    assert "tuned" in record["param_sources"].values()
    assert record["acc_forget_test"] <= 10.0, record["acc_forget_test"]


@pytest.mark.parametrize("label", sorted(PUBLISHED_BEHAVIOUR))
def test_baseline_at_its_published_setting(label, unit_grid, run_cfg, original_record):
    record = run_method(unit_grid, run_cfg, label)
    method = record["registered_method"]
    assert record["params"] == get_method(method).default_params()  # the published setting
    assert "tuned" not in record["param_sources"].values()
    assert all(finite_or_explained(record, k) for k in METRIC_KEYS)
    forgets, keeps = PUBLISHED_BEHAVIOUR[label]
    assert (record["acc_forget_test"] <= 10.0) == forgets, record["acc_forget_test"]
    kept = record["acc_retain_test"] >= original_record["acc_retain_test"] - 8.0
    assert kept == keeps, record["acc_retain_test"]


def test_pbu_official_forgets_less_but_still_forgets(unit_grid, run_cfg, original_record):
    record = run_method(unit_grid, run_cfg, "pbu_official")
    assert record["acc_forget_test"] < original_record["acc_forget_test"]
    assert record["params"]["stop_forget_acc"] is None
    assert record["params"]["batchnorm"] == "train"


def test_pbu_reports_its_phases(unit_grid, run_cfg):
    record = run_method(unit_grid, run_cfg, "pbu")
    phases = {k for k in record["timings"] if not k.startswith("metric_")}
    assert phases == {"fisher_s", "optimise_s"}
    assert all(v >= 0 for v in record["timings"].values())
    assert record["time_s"] >= record["timings"]["optimise_s"] * 0.5


def test_bad_teaching_gives_each_sample_its_own_teacher():
    # A mixed batch: rows 0-1 forget, rows 2-3 retain; the student must be pulled towards the
    # incompetent teacher on the first two rows only.
    torch.manual_seed(0)
    student, competent, incompetent = (torch.nn.Linear(3, 4) for _ in range(3))
    x = torch.randn(4, 3)
    forget = torch.tensor([True, True, False, False])
    method = get_method("bad_teaching")()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0)
    loss = method._step(student, x, forget, competent=competent, incompetent=incompetent,
                        optimizer=optimizer)
    with torch.no_grad():
        target = torch.cat([incompetent(x[:2]), competent(x[2:])]).softmax(1)
        expected = torch.nn.functional.kl_div(student(x).log_softmax(1), target,
                                              reduction="batchmean")
    assert torch.allclose(loss, expected)
    with pytest.raises(ValueError, match="batch_size"):
        get_method("bad_teaching")(batch_size=0)


def test_bad_teaching_rejects_an_empty_forget_loader(digits_data, original):
    with pytest.raises(ValueError, match="empty"):
        get_method("bad_teaching")().unlearn(copy.deepcopy(original),
                                             forget_task(digits_data, limit=0))


# ---------------------------------------------------------------- PBU bad inputs


def forget_task(digits_data, *, forget_classes=(2,), labels_from=(2,), limit=None
                ) -> UnlearningTask:
    """A task whose forget loader holds training samples of ``labels_from`` (first batch first)."""
    x, y = digits_data.train.tensors
    idx = torch.as_tensor(class_indices(digits_data.train_targets, labels_from, include=True))
    if limit is not None:
        idx = idx[:limit]
    return UnlearningTask(forget_classes=forget_classes, num_classes=10,
                          forget_loader=TensorBatches(x[idx], y[idx], batch_size=64,
                                                      shuffle=False),
                          retain_loader=None, device=torch.device("cpu"), seed=0)


def assert_unchanged_and_finite(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.isfinite(p.float()).all(), name
        assert torch.equal(p, q), name


def test_pbu_rejects_an_empty_forget_loader(digits_data, original):
    model = copy.deepcopy(original)
    with pytest.raises(ValueError, match="empty"):
        get_method("pbu")().unlearn(model, forget_task(digits_data, limit=0))
    assert_unchanged_and_finite(model, original)


def test_pbu_rejects_a_non_forget_label(digits_data, original):
    # Samples of class 3 handed over as if they were the forget class 2.
    task = forget_task(digits_data, forget_classes=(2,), labels_from=(2, 3))
    with pytest.raises(ValueError, match="forget"):
        get_method("pbu")().unlearn(copy.deepcopy(original), task)


def test_pbu_non_finite_loss_raises_before_touching_the_model(digits_data, original):
    model = copy.deepcopy(original)
    with pytest.raises(FloatingPointError):
        get_method("pbu")(alpha=float("nan")).unlearn(model, forget_task(digits_data))
    assert_unchanged_and_finite(model, original)


@pytest.mark.parametrize("bad", [{"batchnorm": "frozen"}, {"fisher": "nope"}, {"lr": 0.0},
                                 {"epochs": 0}, {"gamma": -1.0}])
def test_pbu_rejects_bad_settings_when_constructed(bad):
    (key, value), = bad.items()
    with pytest.raises(ValueError, match=rf"^{key}={value!r}"):
        PBU(**bad)


def nan_pbu_cell(unit_grid):
    base = find_cell(unit_grid, "pbu")
    return Cell(experiment=base.experiment, forget_classes=(2,), label="pbu",
                       method="pbu", seed=0, params={**base.params, "alpha": float("nan")})


def test_run_cell_turns_a_failure_into_an_error_record(unit_grid, run_cfg, original):
    record = run_cell(nan_pbu_cell(unit_grid), run_cfg, curves=False)
    assert record["error"].startswith("FloatingPointError")
    assert "Traceback" in record["traceback"]
    assert record["cell"] == "digits/smallcnn/2/pbu/0"
    assert not set(METRIC_KEYS) & set(record)  # no metrics of a half-unlearned model


def test_failed_cell_goes_to_errors_jsonl_and_the_grid_finishes(unit_grid, run_cfg, tmp_path,
                                                              original):
    exp = unit_grid.experiments[0]
    # Built directly: the grid schema would reject a NaN parameter.
    nan_params = {**exp.params["pbu"], "alpha": float("nan")}
    bad = Grid(name="failing", seeds=(0,), curves=False,
               methods=(MethodSpec(label="pbu", method="pbu", params={"alpha": float("nan")}),),
               experiments=(dataclasses.replace(exp, forget_classes=((2,),),
                                                params={"pbu": nan_params}),))
    cfg = RunConfig(results_dir=tmp_path, cache_dir=run_cfg.cache_dir)
    assert run_grid(bad, cfg) == (2, 1)
    runs = list(read_records(tmp_path / "failing" / "runs.jsonl"))
    errors = list(read_records(tmp_path / "failing" / "errors.jsonl"))
    assert [r["method"] for r in runs] == ["original"]
    assert [r["method"] for r in errors] == ["pbu"]
    # The failed cell is still pending: a rerun tries it again (and only it).
    _, pending = pending_cells(bad, tmp_path)
    assert [c.label for c in pending] == ["pbu"]


def test_a_collapse_is_a_warning_in_the_record(unit_grid, run_cfg, original):
    """PBU with its learning rate forced far too high, no stopping rule and no logit anchor
    drives every sample to one class; the record says so, from the forget samples alone."""
    base = find_cell(unit_grid, "pbu")
    cell = Cell(experiment=base.experiment, forget_classes=(2,), label="pbu_lr_high",
                method="pbu", seed=0,
                params={**base.params, "lr": 0.01, "stop_forget_acc": None, "epochs": 10,
                        "logit_anchor": 0.0})
    record = run_cell(cell, run_cfg, curves=False)
    assert "error" not in record, record.get("traceback")
    assert record["acc_retain_test"] < 30  # it did collapse
    assert any(w.startswith("collapse:") for w in record["warnings"]), record["warnings"]
    healthy = run_cell(find_cell(unit_grid, "pbu"), run_cfg, curves=False)
    assert healthy["warnings"] == []
