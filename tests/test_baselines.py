"""The baselines run as published (issue 12): UNSIR's impair set, Bad Teaching's batches and
randomly initialised teacher, and the logit-mask reference row."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from test_paper import _fake_hub

from bench.data import TensorBatches
from bench.harness.builtin_grids import BUILTIN_GRIDS, REFERENCE_METHODS
from bench.harness.cells import grid_cells
from bench.harness.config import RunConfig
from bench.harness.execute import _build_task, ensure_original, with_data
from bench.harness.grid import parse_grid
from bench.report.aggregate import is_reference, label, method_order
from methods import BadTeaching, FastEffective, LogitMask, UnlearningTask, get_method
from methods.bad_teaching import incompetent_teacher

# ---------------------------------------------------------------- a synthetic task


def synthetic_task(*, forget=(3,), per_class=1200, num_classes=10, loader_batch=64
                   ) -> UnlearningTask:
    """8x8 one-channel images, ``per_class`` samples per class, loaders of ``loader_batch``."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    x = torch.randn(len(y), 1, 8, 8, generator=g)
    is_forget = torch.isin(y, torch.tensor(forget))
    return UnlearningTask(
        forget_classes=tuple(forget), num_classes=num_classes, device=torch.device("cpu"),
        seed=0,
        forget_loader=TensorBatches(x[is_forget], y[is_forget], batch_size=loader_batch,
                                    shuffle=True, seed=1),
        retain_loader=TensorBatches(x[~is_forget], y[~is_forget], batch_size=loader_batch,
                                    shuffle=True, seed=2))


def tiny_model(num_classes=10) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))


# ---------------------------------------------------------------- UNSIR


@pytest.mark.parametrize("forget", [(3,), (0, 2)])
def test_unsir_impair_pass_matches_the_official_recipe(forget):
    task = synthetic_task(forget=forget)
    method = FastEffective(noise_steps=2)  # the noise's values do not matter here
    batches = list(method.impair_batches(tiny_model(), task))
    sizes = [len(y) for _, y, _ in batches]
    n_noise = 20 * 256 * len(forget)                      # 20 copies of each 256-noise batch
    n_retain = 1000 * (10 - len(forget))                  # 1,000 per retain class
    assert sum(sizes) == n_noise + n_retain
    assert set(sizes[:-1]) == {256} and 0 < sizes[-1] <= 256  # shuffled batches of 256
    y = torch.cat([y for _, y, _ in batches])
    source = torch.cat([s for _, _, s in batches])
    noise_share = float((source == 0).float().mean())
    assert noise_share == pytest.approx(n_noise / (n_noise + n_retain))
    if forget == (3,):
        assert noise_share == pytest.approx(0.3626, abs=1e-3)  # the ~36 % of the recipe
    # Each class's noise carries its own label (not the notebook's class-0 bug); the retain
    # subset is class-balanced.
    for c in forget:
        assert int((y[source == 0] == c).sum()) == 20 * 256
    counts = torch.bincount(y[source == 1], minlength=10)
    assert all(int(counts[c]) == (0 if c in forget else 1000) for c in range(10))
    # Shuffled: noise is spread over the batches, not in pure-noise batches.
    shares = [float((s == 0).float().mean()) for _, _, s in batches[:-1]]
    assert 0.2 < min(shares) and max(shares) < 0.55 if forget == (3,) else True


def test_unsir_defaults_are_the_published_ones():
    m = FastEffective()
    assert (m.noise_steps, m.noise_lr, m.noise_l2, m.noise_samples, m.noise_copies,
            m.batch_size, m.retain_per_class, m.impair_lr, m.repair_lr) == (
        40, 0.1, 0.1, 256, 20, 256, 1000, 0.02, 0.01)


def test_unsir_unlearn_trains_in_batches_of_256(monkeypatch):
    task = synthetic_task(per_class=300)  # subset = the whole retain set (2,700)
    seen: list[tuple[float, list[int]]] = []

    def record(model, batches, *, lr, task):
        seen.append((lr, [len(y) for _, y in batches]))

    monkeypatch.setattr(FastEffective, "_epoch", staticmethod(record))
    FastEffective(noise_steps=1).unlearn(tiny_model(), task)
    (impair_lr, impair), (repair_lr, repair) = seen
    assert (impair_lr, repair_lr) == (0.02, 0.01)
    assert sum(impair) == 5120 + 2700 and sum(repair) == 2700
    assert set(impair[:-1]) == set(repair[:-1]) == {256}


def test_unsir_streams_only_what_it_needs():
    # Retain classes larger than the subset: the pass stops once the subset is full.
    task = synthetic_task(per_class=3000)
    pulled = 0
    inner = task.retain_loader

    class Counting:
        def __len__(self):
            return len(inner)

        def __iter__(self):
            nonlocal pulled
            for batch in inner:
                pulled += 1
                yield batch

    task = UnlearningTask(**{**task.__dict__, "retain_loader": Counting()})
    list(FastEffective(noise_steps=1).impair_batches(tiny_model(), task))
    assert pulled < 0.8 * len(inner)


# ---------------------------------------------------------------- Bad Teaching


def test_bad_teaching_defaults_are_the_published_ones():
    m = BadTeaching()
    assert (m.epochs, m.lr, m.retain_fraction, m.temperature, m.batch_size) == (
        1, 1e-4, 0.3, 1.0, 256)
    with pytest.raises(ValueError, match="batch_size"):
        BadTeaching(batch_size=0)


def test_bad_teaching_batches_are_shuffled_rows_of_256():
    task = synthetic_task(per_class=500)
    batches = list(BadTeaching().batches(task, epoch=0))
    sizes = [len(y) for _, y, _ in batches]
    assert set(sizes[:-1]) == {256}
    source = torch.cat([s for _, _, s in batches])
    y = torch.cat([y for _, y, _ in batches])
    assert int((source == 0).sum()) == 500                        # every forget sample
    assert int((source == 1).sum()) == math.ceil(0.3 * 4500)      # 30 % of the retain set
    assert bool((y[source == 0] == 3).all()) and not bool((y[source == 1] == 3).any())
    # Row-level shuffling: forget counts per batch are not multiples of the loader batch.
    per_batch = [int((s == 0).sum()) for _, _, s in batches]
    assert any(k % 64 for k in per_batch)


def test_incompetent_teacher_shares_no_weights_with_the_original_or_imagenet(
        tmp_path, monkeypatch):
    imagenet = _fake_hub(tmp_path, monkeypatch, "resnet18")
    raw = {"name": "pre", "seeds": [0], "methods": ["bad_teaching"],
           "experiments": [{"dataset": "digits", "arch": "resnet18", "forget_classes": [[2]],
                            "pretrained": "imagenet", "train_per_class": 4,
                            "test_per_class": 2, "train": {"epochs": 1, "lr": 1e-9}}]}
    cfg = RunConfig(results_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    cell = next(c for c in grid_cells(parse_grid(raw)) if c.method == "bad_teaching")
    original, _ = ensure_original(cell, cfg)
    cell, data = with_data(cell, cfg)
    task = _build_task(cell, BadTeaching, data, cfg=cfg, curves=False, curve=[],
                       eval_seconds=[])
    # make_model itself is pretrained (the reason for re-initialising).
    assert torch.equal(task.make_model().state_dict()["layer4.1.conv2.weight"],
                       imagenet["layer4.1.conv2.weight"])
    teacher = incompetent_teacher(task).state_dict()
    again = incompetent_teacher(task).state_dict()
    references = {"original": original.state_dict(), "imagenet": imagenet}
    checked = 0
    for name, value in teacher.items():
        if not value.is_floating_point():
            continue
        assert torch.equal(value, again[name]), name  # seeded
        if value.unique().numel() == 1:
            # A constant default (BatchNorm weight 1, bias 0, fresh running statistics), as in
            # the official teacher; the fake ImageNet state and a fresh stem have them too.
            continue
        for which, state in references.items():
            other = state.get(name)
            if other is None or other.shape != value.shape:
                continue
            same = (value == other).float().mean().item()
            assert same < 0.01, (name, which, same)
            checked += 1
    assert checked > 40


# ---------------------------------------------------------------- logit mask


def test_logit_mask_silences_the_forget_class_and_changes_nothing_else(digits_data, original):
    x, _ = digits_data.test.tensors
    model = LogitMask().unlearn(copy.deepcopy(original), UnlearningTask(
        forget_classes=(2,), num_classes=10, forget_loader=None, retain_loader=None,
        device=torch.device("cpu"), seed=0))
    with torch.no_grad():
        before, after = original(x).argmax(1), model(x).argmax(1)
    assert not bool((after == 2).any())                     # A_Df = 0
    kept = before != 2
    assert torch.equal(after[kept], before[kept])           # retain predictions unchanged
    changed = [n for n, p in model.state_dict().items()
               if not torch.equal(p, original.state_dict()[n])]
    assert len(changed) == 1 and changed[0].endswith("bias")


def test_logit_mask_is_a_labelled_reference_row_in_every_builtin_grid():
    assert LogitMask.needs == frozenset({"forget"})  # declared, never read
    assert get_method("logit_mask") is LogitMask
    assert "reference" in label("method", "logit_mask").lower()
    assert is_reference("logit_mask") and not is_reference("pbu")
    assert method_order(["logit_mask", "zzz", "pbu", "original"])[-1] == "logit_mask"
    for name, grid in BUILTIN_GRIDS.items():
        labels = [m if isinstance(m, str) else m["name"] for m in grid["methods"]]
        assert set(REFERENCE_METHODS) <= set(labels), name
    with pytest.raises(ValueError, match="mask_value"):
        LogitMask(mask_value=0.0)


def test_no_builtin_grid_sets_the_published_baselines_by_hand():
    # A built-in grid's values for the baselines come from a committed tuned file (issue 15),
    # never from a hand-written override; all-methods-fashion carries digits' tuned values
    # over to data they were not chosen on.
    import yaml

    from bench.harness.builtin_grids import tuned_file

    with open(tuned_file("all-methods")) as f:
        tuned = {e["method"]: e["params"] for e in yaml.safe_load(f)["entries"]}
    for name, grid in BUILTIN_GRIDS.items():
        for exp in grid["experiments"]:
            for method in ("bad_teaching", "fast_effective"):
                given = exp.get("method_params", {}).get(method)
                assert given is None or given == tuned[method], (name, method)
