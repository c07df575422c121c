"""Runs cells: trains or loads the original model, hands a method its task, evaluates, records.

Phase one trains each original model once; phase two runs the cells (in parallel through
``parallel.spread``), appending one record per finished cell and one error record per failed one.
"""
from __future__ import annotations

import copy
import functools
import logging
import time
import traceback
from typing import Any

import torch

from bench.data import (
    ImageData,
    class_indices,
    load_dataset,
    make_loader,
    subsample_per_class,
)
from bench.harness.accel import configure_backends, eval_batch_size, prepare_model
from bench.harness.cache import ModelCache, content_key
from bench.harness.cells import (
    Cell,
    original_key,
    original_spec,
    pending_cells,
    runs_path,
    unlearned_key,
)
from bench.harness.config import RunConfig
from bench.harness.grid import Experiment, Grid
from bench.harness.parallel import spread
from bench.harness.provenance import provenance
from bench.harness.store import append_record, repair_tail
from bench.metrics import accuracy, evaluate_splits, predict_logits
from bench.models import build_model
from methods import UnlearningTask, get_method, load_plugins
from methods.training import train_model

log = logging.getLogger(__name__)

@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, root: str | None, download: bool, split_seed: int,
                   train_per_class: int | None = None,
                   test_per_class: int | None = None) -> ImageData:
    data = load_dataset(name, root=root, download=download, split_seed=split_seed)
    if train_per_class is None and test_per_class is None:
        return data
    return subsample_per_class(data, train_per_class=train_per_class,
                               test_per_class=test_per_class, seed=split_seed)


def experiment_data(exp: Experiment, *, root: str | None, download: bool) -> ImageData:
    return cached_dataset(exp.dataset, root, download, exp.split_seed,
                          exp.train_per_class, exp.test_per_class)


def _model_factory(exp: Experiment, data: ImageData, cfg: RunConfig, *,
                   initialised: bool = True):
    """``initialised=False`` skips reading pretrained weights, for models loaded from the cache."""
    def make() -> torch.nn.Module:
        model = build_model(exp.arch, num_classes=data.num_classes, in_channels=data.in_channels,
                            image_size=data.image_size, download=cfg.download,
                            pretrained=exp.pretrained if initialised else None)
        return prepare_model(model, cfg.device)

    return make


def _cached_training(*, spec: dict[str, Any], exp: Experiment, data: ImageData,
                     indices, seed: int, cfg: RunConfig) -> tuple[torch.nn.Module, dict]:
    """Load the model ``spec`` determines from the cache, or train it on ``indices`` and store it."""
    cache = ModelCache(cfg.cache_dir)
    key = content_key(spec)
    model = _model_factory(exp, data, cfg, initialised=False)()
    meta = cache.load(key, model)
    if meta is None:
        device = torch.device(cfg.device)
        torch.manual_seed(seed)
        model = _model_factory(exp, data, cfg)()
        loader = make_loader(data.train, indices, batch_size=exp.train.batch_size, shuffle=True,
                             seed=seed, device=device)
        start = time.perf_counter()
        train_model(model, loader, exp.train, device=device)
        meta = {"spec": spec, "train_s": time.perf_counter() - start}
        cache.save(key, model, meta)
        log.debug("trained %s in %.1fs (cache %s)", spec["kind"], meta["train_s"], key)
    return model.eval(), meta


def ensure_original(exp: Experiment, seed: int, cfg: RunConfig) -> tuple[torch.nn.Module, dict]:
    data = experiment_data(exp, root=cfg.data_root, download=cfg.download)
    return _cached_training(spec=original_spec(exp, seed), exp=exp, data=data, seed=seed, cfg=cfg,
                            indices=torch.arange(len(data.train_targets)).numpy())


def _prepare_worker(cfg: RunConfig) -> None:
    """Worker processes start bare: set their thread count and register the user's plugins."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    configure_backends(cfg.device)
    load_plugins(cfg.plugins, use_entry_points=False)


def train_original(exp: Experiment, seed: int, cfg: RunConfig) -> tuple[str, float]:
    """Phase one of a grid: (which original, its training time in seconds)."""
    _prepare_worker(cfg)
    return f"{exp.dataset}/{exp.arch} seed {seed}", ensure_original(exp, seed, cfg)[1]["train_s"]


def _build_task(cell: Cell, cls: type, data: ImageData, *, cfg: RunConfig, curves: bool,
                curve: list[dict[str, Any]], eval_seconds: list[float]) -> UnlearningTask:
    """Hand the method exactly what its ``needs`` declares, nothing more."""
    exp, device, seed = cell.experiment, torch.device(cfg.device), cell.seed
    needs = cls.needs

    def loader(include: bool):
        indices = class_indices(data.train_targets, cell.forget_classes, include=include)
        return make_loader(data.train, indices, batch_size=exp.train.batch_size, shuffle=True,
                           seed=seed, device=device)

    factory = _model_factory(exp, data, cfg)
    test_sets = _test_loaders(data, cell.forget_classes, device)

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        # Curves only: its time is taken out of the method's time_s.
        start = time.perf_counter()
        was_training = model.training
        out = {f"acc_{name}": accuracy(*predict_logits(model, ld, device=device))
               for name, ld in test_sets.items()}
        model.train(was_training)
        eval_seconds.append(time.perf_counter() - start)
        return out

    return UnlearningTask(
        forget_classes=cell.forget_classes, num_classes=data.num_classes,
        forget_loader=loader(True) if "forget" in needs else None,
        retain_loader=loader(False) if "retain" in needs else None,
        device=device, seed=seed,
        make_model=factory if "architecture" in needs else None,
        train_model=((lambda m, ld: train_model(m, ld, exp.train, device=device))
                     if "architecture" in needs else None),
        log=lambda **values: curve.append(values),
        evaluate=evaluate if curves else None,
    )


def _test_loaders(data: ImageData, forget: tuple[int, ...], device: torch.device) -> dict:
    return {
        f"{part}_test": make_loader(data.test, class_indices(data.test_targets, forget,
                                                              include=part == "forget"),
                                    batch_size=eval_batch_size(device), shuffle=False, device=device)
        for part in ("forget", "retain")
    }


def _unlearn(cell: Cell, original: torch.nn.Module, data: ImageData, *, cfg: RunConfig,
             curves: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Run the cell's method on a copy of the original; returns (model, timing/curve fields)."""
    cls = get_method(cell.method)
    curve: list[dict[str, Any]] = []
    eval_seconds: list[float] = []
    task = _build_task(cell, cls, data, cfg=cfg, curves=curves, curve=curve,
                       eval_seconds=eval_seconds)
    cache_key = unlearned_key(cell) if cls.cache_model else None
    if cache_key is not None:
        model = _model_factory(cell.experiment, data, cfg, initialised=False)()
        meta = ModelCache(cfg.cache_dir).load(cache_key, model)
        if meta is not None:
            return model.eval(), meta["fields"]
    torch.manual_seed(cell.seed)
    method = cls(**cell.params)
    start = time.perf_counter()
    model = method.unlearn(copy.deepcopy(original), task)
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start - sum(eval_seconds)
    fields = {"time_s": elapsed, "timings": dict(task.timings), "curve": curve}
    if cache_key is not None:
        ModelCache(cfg.cache_dir).save(cache_key, model, {"fields": fields})
    return model.eval(), fields


def run_cell(cell: Cell, cfg: RunConfig, *, curves: bool) -> dict[str, Any]:
    """One cell end to end; failures come back as an error record instead of raising."""
    _prepare_worker(cfg)
    base = {"cell": cell.key, "config_hash": cell.config_hash, "dataset": cell.experiment.dataset,
            "arch": cell.experiment.arch, "forget_classes": cell.classes_text,
            "method": cell.label, "registered_method": cell.method, "seed": cell.seed,
            "params": cell.params, "train": cell.experiment.train.as_dict(),
            **cell.experiment.data_spec}
    try:
        exp = cell.experiment
        data = experiment_data(exp, root=cfg.data_root, download=cfg.download)
        original, meta = ensure_original(exp, cell.seed, cfg)
        if cell.method == "original":
            model, fields = original, {"time_s": meta["train_s"], "timings": {}, "curve": []}
        else:
            model, fields = _unlearn(cell, original, data, cfg=cfg, curves=curves)
        device = torch.device(cfg.device)
        train_sets = {
            f"{part}_train": make_loader(
                data.train, class_indices(data.train_targets, cell.forget_classes,
                                          include=part == "forget"),
                batch_size=eval_batch_size(device), shuffle=False, device=device)
            for part in ("forget", "retain")}
        metrics = evaluate_splits(model, device=device, seed=cell.seed,
                                  **train_sets, **_test_loaders(data, cell.forget_classes, device))
        return {**base, **metrics, **fields, **provenance(device=cfg.device, commit=cfg.git_commit)}
    except Exception as exc:  # noqa: BLE001 - a failing cell must not stop the grid
        return {**base, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), **provenance(device=cfg.device, commit=cfg.git_commit)}


def run_grid(grid: Grid, cfg: RunConfig) -> tuple[int, int]:
    """Compute every missing cell; returns (cells run, cells failed)."""
    out = runs_path(cfg.results_dir, grid.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    repair_tail(out)
    cells, pending = pending_cells(grid, cfg.results_dir)
    log.info("grid %s: %d cells, %d already done, %d to run", grid.name, len(cells),
             len(cells) - len(pending), len(pending))
    if not pending:
        return 0, 0
    # Originals first, once each, so parallel cells never train the same model twice.
    originals = {original_key(c.experiment, c.seed): (c.experiment, c.seed)
                 for c in pending}
    missing = [(e, s) for key, (e, s) in originals.items()
               if not ModelCache(cfg.cache_dir).path(key).exists()]
    for which, train_s in spread(train_original, missing, cfg):
        log.info("trained original %s in %.1fs", which, train_s)
    failed = 0
    errors = out.with_name("errors.jsonl")
    results = spread(functools.partial(run_cell, curves=grid.curves),
                      [(c,) for c in pending], cfg)
    for done, record in enumerate(results, 1):
        if "error" in record:
            failed += 1
            append_record(errors, record)
            log.error("[%d/%d] %s failed: %s", done, len(pending), record["cell"], record["error"])
            continue
        append_record(out, record)
        log.info("[%d/%d] %s: A_Df %.1f A_Dr %.1f MIA %.1f (%.1fs)", done, len(pending),
                 record["cell"], record["acc_forget_test"], record["acc_retain_test"],
                 record["mia"], record["time_s"])
    return len(pending), failed
