"""The twelve baselines of issue 13: each forgets on digits (two classes at once, through the
harness, with the ``all-methods`` grid's settings) and has its defining property.

The forgetting test runs one cell per method on the quick grid's setting (smallcnn, 15 training
epochs, seed 0) forgetting classes 2 and 6 together; the property tests use a tiny model on
random data and take milliseconds.
"""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from helpers import find_cell
from torch import nn

from bench.data import TensorBatches
from bench.harness.builtin_grids import ALL_METHODS, BUILTIN_GRIDS
from bench.harness.execute import run_cell
from bench.harness.grid import parse_grid
from methods import CellShape, UnlearningTask, get_method, list_methods
from methods.loops import last_layers
from methods.random_labels import _Relabelled

NEW_METHODS = ["gradient_ascent", "neggrad_plus", "random_labels", "scrub", "ssd", "salun",
               "l1_sparse", "boundary_shrink", "cf_k", "eu_k", "fisher_forgetting",
               "influence_unlearning"]
NEEDS = {"gradient_ascent": {"forget"}, "boundary_shrink": {"forget"},
         "l1_sparse": {"retain"}, "cf_k": {"retain"}, "eu_k": {"retain"},
         "fisher_forgetting": {"retain"}}


@pytest.fixture(scope="module")
def pair_grid():
    raw = copy.deepcopy(BUILTIN_GRIDS["all-methods"])
    raw.update(name="unit-more", seeds=[0], methods=["retrain", *NEW_METHODS, "pbu"])
    raw["experiments"][0]["forget_classes"] = [[2, 6]]
    return parse_grid(raw)


@pytest.fixture(scope="module")
def retrain_pair(pair_grid, run_cfg) -> dict:
    record = run_cell(find_cell(pair_grid, "retrain", (2, 6)), run_cfg, curves=False)
    assert "error" not in record, record.get("traceback")
    return record


def test_all_methods_grid_lists_every_registered_builtin():
    assert set(NEW_METHODS) <= set(list_methods())
    assert set(ALL_METHODS) == {n for n in list_methods()}
    assert BUILTIN_GRIDS["all-methods"]["experiments"][0]["forget_classes"] == [
        [2], [6], [8], [2, 6]]


# The all-methods tuned file's values (16 trials a method, validation view) do not make these
# forget classes 2 and 6 together on digits (README: Results on --grid all-methods). Strict:
# whoever makes one of them forget the pair sees the mark flip and updates the README.
SHORT_OF_THE_BAR = {
    "fisher_forgetting": "no noise scale forgets on digits; the tuned one keeps ~36 % of the pair",
    "influence_unlearning": "the tuned alpha keeps 3-46 % of the pair, by seed",
    "ssd": "16 trials did not find the threshold window; the pair keeps 24-36 %",
}


@pytest.mark.parametrize("name", [
    *(pytest.param(n, marks=pytest.mark.xfail(reason=SHORT_OF_THE_BAR[n], strict=True))
      if n in SHORT_OF_THE_BAR else n for n in NEW_METHODS), "pbu"])
def test_forgets_two_classes_on_digits(name, pair_grid, run_cfg, retrain_pair):
    record = run_cell(find_cell(pair_grid, name, (2, 6)), run_cfg, curves=False)
    assert "error" not in record, record.get("traceback")
    assert record["forget_classes"] == "2+6"
    assert record["acc_forget_test"] <= 5.0, record["acc_forget_test"]
    assert record["acc_retain_test"] >= retrain_pair["acc_retain_test"] - 10.0


def test_pbu_forgets_a_pair_where_the_batch_mean_stalled(pair_grid, run_cfg):
    # Seed 1: with one batch mean over both classes' samples PBU held 100 % forget-train
    # accuracy for all 200 epochs (methods/pbu.py); the per-class sum forgets the pair.
    grid = dataclasses.replace(pair_grid, seeds=(1,))
    retrain = run_cell(find_cell(grid, "retrain", (2, 6), seed=1), run_cfg, curves=False)
    record = run_cell(find_cell(grid, "pbu", (2, 6), seed=1), run_cfg, curves=False)
    assert "error" not in record, record.get("traceback")
    assert record["acc_forget_test"] <= 5.0, record["acc_forget_test"]
    assert record["acc_retain_test"] >= retrain["acc_retain_test"] - 10.0


@pytest.mark.parametrize("name", NEW_METHODS)
def test_declares_exactly_its_data_and_a_cost(name):
    cls = get_method(name)
    assert cls.needs == frozenset(NEEDS.get(name, {"forget", "retain"}))
    shape = CellShape(n_forget=100, n_retain=900, num_classes=10, forget_class_count=1,
                      train_epochs=15)
    assert cls().estimate_passes(shape) > 0


@pytest.mark.parametrize(("name", "bad"), [
    ("gradient_ascent", {"lr": 0.0}), ("neggrad_plus", {"alpha": 1.5}),
    ("random_labels", {"epochs": 0}), ("scrub", {"kd_temperature": 0.0}),
    ("ssd", {"alpha": -1.0}), ("salun", {"mask_ratio": 0.0}), ("l1_sparse", {"alpha": -1.0}),
    ("boundary_shrink", {"bound": 0.0}), ("cf_k", {"k": 0}), ("eu_k", {"optimizer": "rms"}),
    ("fisher_forgetting", {"alpha": 0.0}), ("influence_unlearning", {"alpha": -1.0}),
])
def test_rejects_bad_settings(name, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        get_method(name)(**bad)


# ---------------------------------------------------------------- defining properties


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(),
                         nn.Linear(8, 4))


def tiny_task(forget=(0,), seed: int = 0, log=None) -> UnlearningTask:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 1, 6, 6, generator=g)
    y = torch.randint(4, (96,), generator=g)
    f = torch.isin(y, torch.tensor(forget))
    extra = {} if log is None else {"log": log}
    return UnlearningTask(
        forget_classes=tuple(forget), num_classes=4, device=torch.device("cpu"), seed=seed,
        forget_loader=TensorBatches(x[f], y[f], batch_size=16, shuffle=True, seed=seed),
        retain_loader=TensorBatches(x[~f], y[~f], batch_size=16, shuffle=True, seed=seed),
        **extra)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_salun_moves_only_weights_inside_its_mask():
    method = get_method("salun")(epochs=2, lr=0.1, mask_ratio=0.3)
    model, task = tiny_model(), tiny_task()
    masks = []
    compute = method.saliency_mask
    method.saliency_mask = lambda m, t: masks.append(compute(m, t)) or masks[-1]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.unlearn(model, task)
    mask, = masks
    share = sum(m.sum() for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert abs(float(share) - 0.3) < 0.02
    moved_inside = False
    for name, p in model.named_parameters():
        outside = mask[name] == 0
        assert torch.equal(p[outside], before[name][outside]), name
        moved_inside |= not torch.equal(p[~outside], before[name][~outside])
    assert moved_inside


@pytest.mark.parametrize("name", ["cf_k", "eu_k"])
def test_last_k_methods_leave_the_first_layers_bit_identical(name):
    model, task = tiny_model(), tiny_task()
    last = {id(m) for m in last_layers(model, 2)}
    kept = {n for n, m in model.named_modules()
            if id(m) not in last and any(True for _ in m.parameters(recurse=False))}
    before = state(model)
    get_method(name)(k=2, epochs=2, lr=0.05).unlearn(model, task)
    after = model.state_dict()
    for key, value in before.items():
        owner = key.rsplit(".", 1)[0]
        if owner in kept:
            assert torch.equal(after[key], value), key     # params and BatchNorm buffers
    assert not torch.equal(after["7.weight"], before["7.weight"])
    assert all(p.requires_grad for p in model.parameters())


def test_eu_k_reinitialises_the_last_layers_from_the_seed():
    a, b = tiny_model(), tiny_model()
    method = get_method("eu_k")(k=2)
    method.prepare(last_layers(a, 2), tiny_task(seed=3))
    method.prepare(last_layers(b, 2), tiny_task(seed=3))
    assert torch.equal(a[7].weight, b[7].weight)
    assert not torch.equal(a[7].weight, tiny_model()[7].weight)


def test_ssd_only_shrinks_parameters():
    model, task = tiny_model(), tiny_task()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    get_method("ssd")(alpha=1.0, dampening=1.0).unlearn(model, task)
    shrunk = False
    for name, p in model.named_parameters():
        assert (p.abs() <= before[name].abs()).all(), name
        assert (torch.sign(p) * torch.sign(before[name]) >= 0).all(), name
        shrunk |= bool((p.abs() < before[name].abs()).any())
    assert shrunk


def test_ssd_importances_see_single_class_batches_covering_every_row_once():
    from methods.ssd import class_batches

    x = torch.arange(50, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(50) % 3
    loaders = [TensorBatches(x[:40], y[:40], batch_size=8, shuffle=True, seed=0),
               TensorBatches(x[40:], y[40:], batch_size=4, shuffle=True, seed=0)]
    batches = list(class_batches(loaders))
    assert all(len(b.unique()) == 1 for _, b in batches)
    sizes = [len(b) for _, b in batches]
    short = [n for n in sizes if n < 8]   # each class's remainder, after every full batch
    assert 0 < len(short) <= 3 and sizes[len(sizes) - len(short):] == short
    rows = torch.cat([v for v, _ in batches]).squeeze(1)
    assert sorted(rows.tolist()) == list(range(50))
    assert all(torch.equal(v.squeeze(1).long() % 3, b) for v, b in batches)


@pytest.mark.parametrize("forget", [(0,), (0, 2)])
def test_ssd_relative_alpha_is_a_fraction_of_the_ratio_ceiling(forget):
    # tiny_task has 4 classes: the ceiling I_f / I_d is 4 / k.
    relative, absolute = tiny_model(), tiny_model()
    get_method("ssd")(alpha=0.3, relative_alpha=True).unlearn(relative, tiny_task(forget))
    get_method("ssd")(alpha=0.3 * 4 / len(forget)).unlearn(absolute, tiny_task(forget))
    for p, q in zip(relative.parameters(), absolute.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(relative.parameters(),
                                                     tiny_model().parameters()))


@pytest.mark.parametrize("forget", [(0,), (0, 2)])
def test_random_labels_never_assigns_a_forget_class(forget):
    task = tiny_task(forget)
    others = torch.tensor([c for c in range(4) if c not in forget])
    stream = _Relabelled(task.forget_loader, others, torch.Generator().manual_seed(0))
    labels = torch.cat([y for _ in range(20) for _, y in stream])
    assert not torch.isin(labels, torch.tensor(forget)).any()
    assert set(labels.tolist()) == set(others.tolist())


def test_boundary_shrink_targets_are_never_the_true_class():
    model, task = tiny_model(), tiny_task((0, 1))
    method = get_method("boundary_shrink")()
    for x, y in task.forget_loader:
        targets = method.targets(model.eval(), x, y)
        assert (targets != y).all()


def test_gradient_ascent_raises_the_forget_loss():
    model, task = tiny_model(), tiny_task()
    x, y = task.forget_loader.x, task.forget_loader.y
    loss = lambda m: float(nn.functional.cross_entropy(m.eval()(x), y).detach())
    before = loss(model)
    get_method("gradient_ascent")(lr=0.05, epochs=3).unlearn(model, task)
    assert loss(model) > before


def test_neggrad_plus_with_alpha_one_ignores_the_forget_data():
    a, b = tiny_model(), tiny_model()
    method = get_method("neggrad_plus")(alpha=1.0, epochs=1)
    method.unlearn(a, tiny_task((0,)))
    task = tiny_task((0,))
    shuffled = dict(vars(task))
    fl = task.forget_loader
    shuffled["forget_loader"] = TensorBatches(fl.x.flip(0) * 3, fl.y, batch_size=16,
                                              shuffle=True)
    method.unlearn(b, UnlearningTask(**shuffled))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_scrub_takes_max_steps_only_in_its_first_msteps_plus_one_epochs():
    logged = []
    get_method("scrub")(epochs=4, msteps=1).unlearn(
        tiny_model(), tiny_task(log=lambda **v: logged.append(v)))
    assert [("max_loss" in v) for v in logged] == [True, True, False, False]
    assert all("min_loss" in v for v in logged)


def test_l1_sparse_penalty_decays_linearly_and_shrinks_the_weights():
    method = get_method("l1_sparse")(alpha=0.1, epochs=4, lr=0.05)
    assert [method.penalty(e) for e in range(4)] == pytest.approx([0.1, 0.075, 0.05, 0.025])
    model = tiny_model()
    norm = sum(float(p.detach().abs().sum()) for p in model.parameters())
    method.unlearn(model, tiny_task())
    assert sum(float(p.detach().abs().sum()) for p in model.parameters()) < norm


def test_fisher_forgetting_zeroes_the_forget_rows_of_the_head():
    model, task = tiny_model(), tiny_task((1,))
    before = model[7].weight.detach().clone()
    get_method("fisher_forgetting")().unlearn(model, task)
    head = model[7].weight
    assert head[1].abs().max() < 0.2                  # mean 0, std sqrt(1e-3)
    assert not torch.equal(head[0], before[0])        # noise elsewhere too
    again = tiny_model()
    get_method("fisher_forgetting")().unlearn(again, tiny_task((1,)))
    assert torch.equal(again[7].weight, head)         # noise drawn from the cell's seed


def test_influence_unlearning_takes_one_step_proportional_to_alpha():
    base = tiny_model()
    steps = []
    for alpha in (0.01, 0.02):
        model = copy.deepcopy(base)
        get_method("influence_unlearning")(alpha=alpha).unlearn(model, tiny_task())
        steps.append(torch.cat([(p - q).reshape(-1) for p, q in
                                zip(model.parameters(), base.parameters())]).detach())
    assert torch.allclose(steps[1], 2 * steps[0], atol=1e-6)
    assert steps[0].abs().max() > 0


def test_mixed_batches_cover_the_union_once_in_proportion():
    from methods.loops import mixed_batches

    major = TensorBatches(torch.zeros(90, 1), torch.zeros(90, dtype=torch.long), batch_size=10,
                          shuffle=False)
    minor = TensorBatches(torch.ones(10, 1), torch.ones(10, dtype=torch.long), batch_size=4,
                          shuffle=False)
    batches = list(mixed_batches(major, minor, generator=torch.Generator().manual_seed(0)))
    labels = torch.cat([y for _, y in batches])
    assert len(labels) == 100 and int(labels.sum()) == 10
    assert all(int(y.sum()) <= 2 for _, y in batches[:9])   # spread out, not one pure batch


def test_fisher_forgetting_uses_the_official_batch_mean_fisher():
    # The official ``hessian``: per batch of 32 and class c, mean(p_c) * (grad of the batch's
    # mean CE towards c)^2, summed over c, averaged over batches; eval mode.
    from methods.fisher_forgetting import batch_mean_fisher

    model, task = tiny_model(), tiny_task()
    x, y = (torch.cat(t) for t in zip(*task.retain_loader))
    loader = TensorBatches(x, y, batch_size=48, shuffle=False)   # cut into 32 + 16
    expected = [torch.zeros_like(p) for p in model.parameters()]
    model.eval()
    pieces = [xb for xs, _ in loader for xb in xs.split(32)]
    for xb in pieces:
        logits = model(xb)
        prob = logits.softmax(1).mean(0)
        for c in range(4):
            loss = nn.functional.cross_entropy(logits, torch.full((len(xb),), c))
            grads = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
            for acc, g in zip(expected, grads):
                acc += prob[c].detach() * g ** 2
    fisher = batch_mean_fisher(model, loader, device=torch.device("cpu"))
    for (name, _), want in zip(model.named_parameters(), expected):
        assert torch.allclose(fisher[name], want / len(pieces), rtol=1e-5, atol=1e-12), name
    # Smaller than the per-sample Fisher: per-sample gradients disagree within a batch.
    from methods.fisher import diagonal_fisher
    exact = diagonal_fisher(model, loader, kind="exact")
    assert sum(float(f.sum()) for f in fisher.values()) < sum(
        float(f.sum()) for f in exact.values())


def test_influence_unlearning_recursion_reads_retain_batches_of_32():
    from methods.influence_unlearning import woodfisher

    model, task = tiny_model(), tiny_task()
    params = [p for p in model.parameters()]
    x, y = (torch.cat(t) for t in zip(*task.retain_loader))
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(0))
    by_32 = woodfisher(model, params, TensorBatches(x, y, batch_size=32, shuffle=False), v,
                       torch.device("cpu"))
    by_64 = woodfisher(model, params, TensorBatches(x, y, batch_size=64, shuffle=False), v,
                       torch.device("cpu"))
    by_16 = woodfisher(model, params, TensorBatches(x, y, batch_size=16, shuffle=False), v,
                       torch.device("cpu"))
    assert torch.allclose(by_64, by_32, atol=1e-6)
    assert not torch.allclose(by_16, by_32, atol=1e-6)
