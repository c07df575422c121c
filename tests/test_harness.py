"""The harness hands a method exactly the data its ``needs`` declares, and nothing else."""
from __future__ import annotations

import time
from collections import Counter
from typing import ClassVar

import numpy as np
import pytest
import torch
from helpers import find_cell

from bench.harness import execute
from bench.harness.cells import Cell
from methods import (
    DATA_NEEDS,
    UnlearningMethod,
    get_method,
    list_methods,
    register_method,
)

CLASS_SETS = [(2,), (2, 6)]


# ---------------------------------------------------------------- helpers


def build_task(cell, cls, data, cfg):
    return execute._build_task(cell, cls, data, cfg=cfg, curves=False, curve=[],
                              eval_seconds=[])


def loader_rows(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def row_counter(x: torch.Tensor, y: torch.Tensor | None = None) -> Counter:
    """Multiset of (image bytes[, label]) so two sample collections compare exactly."""
    images = [row.numpy().tobytes() for row in x]
    return Counter(images if y is None else zip(images, y.tolist()))


def split_subset(dataset, targets: np.ndarray, classes, *, include: bool):
    mask = np.isin(targets, classes)
    idx = torch.as_tensor(np.flatnonzero(mask if include else ~mask))
    x, y = dataset.tensors
    return x[idx], y[idx]


def spy_class(needs: set[str]) -> type:
    """A method that records the task it is given and returns the model untouched."""

    class Spy(UnlearningMethod):
        seen: ClassVar[list] = []

        def unlearn(self, model, task):
            type(self).seen.append(task)
            task.log(epoch=1, note="spy")
            task.timings["phase_s"] = 0.0
            return model

    Spy.needs = frozenset(needs)
    return Spy


# ---------------------------------------------------------------- declared needs


def test_every_registered_method_declares_known_needs():
    for name in list_methods():
        needs = get_method(name).needs
        assert needs and needs <= DATA_NEEDS, (name, needs)


def test_pbu_declares_forget_only():
    assert get_method("pbu").needs == frozenset({"forget"})
    assert get_method("pbu_official").needs == frozenset({"forget"})


# ---------------------------------------------------------------- what the task holds


@pytest.mark.parametrize("classes", CLASS_SETS, ids=lambda c: "+".join(map(str, c)))
def test_pbu_task_holds_only_the_forget_training_samples(classes, unit_grid, digits_data,
                                                        run_cfg):
    task = build_task(find_cell(unit_grid, "pbu", classes), get_method("pbu"), digits_data,
                      run_cfg)
    assert task.retain_loader is None
    assert task.make_model is None
    assert task.train_model is None
    assert task.forget_classes == classes
    assert task.num_classes == 10

    x, y = loader_rows(task.forget_loader)
    assert set(y.tolist()) == set(classes)  # every forget class, and nothing else

    train_x, train_y = split_subset(digits_data.train, digits_data.train_targets, classes,
                                    include=True)
    # Exactly the training samples of the forget classes, each once, with their labels.
    assert row_counter(x, y) == row_counter(train_x, train_y)

    test_rows = set(row_counter(digits_data.test.tensors[0]))
    assert not test_rows & set(row_counter(x))


@pytest.mark.parametrize("classes", CLASS_SETS, ids=lambda c: "+".join(map(str, c)))
def test_retain_loader_holds_all_and_only_retain_training_samples(classes, unit_grid,
                                                                 digits_data, run_cfg):
    spy = spy_class({"forget", "retain"})
    task = build_task(find_cell(unit_grid, "finetune", classes), spy, digits_data, run_cfg)
    assert task.make_model is None and task.train_model is None

    x, y = loader_rows(task.retain_loader)
    assert not set(y.tolist()) & set(classes)
    assert set(y.tolist()) == set(range(10)) - set(classes)
    train_x, train_y = split_subset(digits_data.train, digits_data.train_targets, classes,
                                    include=False)
    assert row_counter(x, y) == row_counter(train_x, train_y)
    assert not set(row_counter(digits_data.test.tensors[0])) & set(row_counter(x))

    _, fy = loader_rows(task.forget_loader)
    assert set(fy.tolist()) == set(classes)
    assert len(fy) + len(y) == len(digits_data.train_targets)


def test_forget_loader_is_withheld_unless_declared(unit_grid, digits_data, run_cfg):
    spy = spy_class({"retain"})
    task = build_task(find_cell(unit_grid, "finetune"), spy, digits_data, run_cfg)
    assert task.forget_loader is None
    assert task.retain_loader is not None


def test_loaders_are_reiterable_and_reshuffle(unit_grid, digits_data, run_cfg):
    task = build_task(find_cell(unit_grid, "pbu"), get_method("pbu"), digits_data, run_cfg)
    (x1, y1), (x2, y2) = loader_rows(task.forget_loader), loader_rows(task.forget_loader)
    assert row_counter(x1, y1) == row_counter(x2, y2)
    assert not torch.equal(x1, x2)  # a second pass is a new shuffle of the same samples


@pytest.mark.parametrize("classes", CLASS_SETS, ids=lambda c: "+".join(map(str, c)))
def test_architecture_need_gives_a_fresh_model_of_the_right_shape(classes, unit_grid,
                                                                 digits_data, run_cfg,
                                                                 original):
    spy = spy_class({"forget", "retain", "architecture"})
    task = build_task(find_cell(unit_grid, "retrain", classes), spy, digits_data, run_cfg)
    assert task.make_model is not None and task.train_model is not None

    fresh, other = task.make_model(), task.make_model()
    assert fresh is not other and fresh is not original
    trained = original.state_dict()
    new = fresh.state_dict()
    assert new.keys() == trained.keys()
    assert all(new[k].shape == trained[k].shape for k in new)
    weights = [k for k in new if k.endswith("weight")]
    assert not all(torch.equal(new[k], trained[k]) for k in weights)  # not a copy of original

    x, _ = next(iter(task.forget_loader))
    fresh.eval()
    with torch.no_grad():
        assert fresh(x).shape == (len(x), 10)
    assert next(fresh.parameters()).device == torch.device("cpu")


# ---------------------------------------------------------------- through run_cell


@pytest.mark.parametrize("needs", [{"forget"}, {"forget", "retain"},
                                   {"forget", "retain", "architecture"}],
                         ids=lambda n: "+".join(sorted(n)))
def test_run_cell_gives_a_registered_spy_only_its_needs(needs, unit_grid, run_cfg, original,
                                                        clean_registry):
    spy = register_method("spy_harness")(spy_class(needs))
    base = find_cell(unit_grid, "pbu", (2, 6))
    cell = Cell(experiment=base.experiment, forget_classes=(2, 6), label="spy_harness",
                       method="spy_harness", seed=0)
    record = execute.run_cell(cell, run_cfg, curves=False)
    assert "error" not in record, record.get("traceback")

    (task,) = spy.seen
    assert (task.forget_loader is not None) == ("forget" in needs)
    assert (task.retain_loader is not None) == ("retain" in needs)
    assert (task.make_model is not None) == ("architecture" in needs)
    assert set(loader_rows(task.forget_loader)[1].tolist()) == {2, 6}

    # The spy returned the original unchanged, so the record repeats the original's accuracy.
    assert record["forget_classes"] == "2+6" and record["method"] == "spy_harness"
    assert record["acc_forget_test"] > 80 and record["acc_retain_test"] > 80
    assert record["curve"] == [{"epoch": 1, "note": "spy"}]
    # The method's own phases; the metrics' times sit beside them as metric_*_s.
    assert {k: v for k, v in record["timings"].items() if not k.startswith("metric_")} == {
        "phase_s": 0.0}
    assert record["time_s"] >= 0


def test_unlearn_works_on_a_copy_of_the_original(unit_grid, run_cfg, original, clean_registry,
                                                 digits_data):
    @register_method("spy_vandal")
    class Vandal(UnlearningMethod):
        needs = frozenset({"forget"})
        received: ClassVar[list] = []

        def unlearn(self, model, task):
            type(self).received.append(model)
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
            return model

    before = {k: v.clone() for k, v in original.state_dict().items()}
    cell = Cell(experiment=unit_grid.experiments[0], forget_classes=(2,),
                       label="spy_vandal", method="spy_vandal", seed=0)
    model, _ = execute._unlearn(cell, original, digits_data, cfg=run_cfg, curves=False)
    assert Vandal.received[0] is not original
    assert all(torch.equal(v, before[k]) for k, v in original.state_dict().items())
    assert all(float(p.detach().abs().sum()) == 0 for p in model.parameters())


def test_record_says_when_the_cell_finished(unit_grid, run_cfg, original, clean_registry):
    """``finished_at`` is stamped after the method ran, not when the cell started."""
    from datetime import datetime, timezone

    @register_method("spy_sleeper")
    class Sleeper(UnlearningMethod):
        needs = frozenset({"forget"})

        def unlearn(self, model, task):
            time.sleep(2.5)
            return model

    cell = Cell(experiment=unit_grid.experiments[0], forget_classes=(2,),
                label="spy_sleeper", method="spy_sleeper", seed=0)
    started = datetime.now(timezone.utc).replace(microsecond=0)  # as coarse as the record's
    record = execute.run_cell(cell, run_cfg, curves=False)
    assert "error" not in record, record.get("traceback")
    finished = datetime.fromisoformat(record["finished_at"])
    assert (finished - started).total_seconds() >= 2
