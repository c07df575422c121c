"""Runs cells: trains or loads the original model, hands a method its task, evaluates, records.

Phase one trains each original model once; phase two runs the cells (in parallel through
``parallel.spread``), appending one record per finished cell and one error record per failed
one. A worker process that dies (the out-of-memory killer, a crash in native code) becomes an
error record for the cell it was running, and the grid goes on.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import logging
import multiprocessing
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data import (
    ImageData,
    class_indices,
    load_dataset,
    make_loader,
    subsample_per_class,
    validation_view,
)
from bench.errors import BenchInputError
from bench.harness.accel import configure_backends, eval_batch_size, prepare_model
from bench.harness.cache import ModelCache
from bench.harness.cells import (
    Cell,
    Context,
    original_key,
    pending_cells,
    runs_path,
    train_spec,
    unlearned_key,
)
from bench.harness.config import RunConfig
from bench.harness.grid import Experiment, Grid
from bench.harness.parallel import WORKER_DEATHS, run_isolated, spread
from bench.harness.provenance import provenance
from bench.harness.store import append_record, repair_tail
from bench.harness.versions import data_fingerprint
from bench.metrics import accuracy, evaluate_splits, predict_logits
from bench.models import build_model
from bench.tuning.objective import FORGET_AGREEMENT, forget_agreement
from methods import UnlearningTask, get_method, load_plugins
from methods.training import train_model

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, root: str | None, download: bool, split_seed: int,
                   train_per_class: int | None = None, test_per_class: int | None = None,
                   validation: float | None = None) -> tuple[ImageData, str]:
    """(the data, its fingerprint), loaded once per process; with ``validation``, tuning's
    view of it (``validation_view``: the test split is never read)."""
    data = load_dataset(name, root=root, download=download, split_seed=split_seed)
    if train_per_class is not None or test_per_class is not None:
        data = subsample_per_class(data, train_per_class=train_per_class,
                                   test_per_class=test_per_class, seed=split_seed)
    if validation is not None:
        data = validation_view(data, fraction=validation, seed=split_seed)
    if len(data.train_targets) == 0 or len(data.test_targets) == 0:
        raise BenchInputError(f"dataset {name!r} has an empty split: {len(data.train_targets)} "
                              f"training and {len(data.test_targets)} test images")
    return data, data_fingerprint(data)


def _dataset(exp: Experiment, *, root: str | None, download: bool) -> tuple[ImageData, str]:
    return cached_dataset(exp.dataset, root, download, exp.split_seed, exp.train_per_class,
                          exp.test_per_class, exp.validation)


def experiment_data(exp: Experiment, *, root: str | None, download: bool) -> ImageData:
    return _dataset(exp, root=root, download=download)[0]


def experiment_contexts(grid: Grid, cfg: RunConfig) -> dict[int, Context]:
    """Each experiment's context: its data's fingerprint and the per-cell thread count."""
    return {i: Context(data_fingerprint=_dataset(e, root=cfg.data_root,
                                                 download=cfg.download)[1],
                       threads=cfg.threads)
            for i, e in enumerate(grid.experiments)}


def with_data(cell: Cell, cfg: RunConfig) -> tuple[Cell, ImageData]:
    """(the cell with its data's fingerprint filled in if it was unknown, its data)."""
    exp = cell.experiment
    data, fingerprint = _dataset(exp, root=cfg.data_root, download=cfg.download)
    if cell.context.data_fingerprint is None:
        cell = dataclasses.replace(cell, context=dataclasses.replace(
            cell.context, data_fingerprint=fingerprint))
    if fingerprint != cell.context.data_fingerprint:
        raise RuntimeError(f"the data of {exp.dataset!r} changed while the grid ran "
                           f"(fingerprint {fingerprint}, expected "
                           f"{cell.context.data_fingerprint})")
    return cell, data


def _model_factory(exp: Experiment, data: ImageData, cfg: RunConfig, *,
                   initialised: bool = True) -> Callable[[], torch.nn.Module]:
    """``initialised=False`` skips reading pretrained weights, for models loaded from the cache."""
    def make() -> torch.nn.Module:
        model = build_model(exp.arch, num_classes=data.num_classes, in_channels=data.in_channels,
                            image_size=data.image_size, download=cfg.download,
                            pretrained=exp.pretrained if initialised else None)
        return prepare_model(model, cfg.device)

    return make


def ensure_original(cell: Cell, cfg: RunConfig) -> tuple[torch.nn.Module, dict]:
    """The cell's original model from the cache, or trained on all training data and stored."""
    cell, data = with_data(cell, cfg)
    exp, seed = cell.experiment, cell.seed
    cache, key = ModelCache(cfg.cache_dir), original_key(cell)
    model = _model_factory(exp, data, cfg, initialised=False)()
    meta = cache.load(key, model)
    if meta is None:
        device = torch.device(cfg.device)
        torch.manual_seed(seed)
        model = _model_factory(exp, data, cfg)()
        loader = make_loader(data.train, np.arange(len(data.train_targets)),
                             batch_size=exp.train.batch_size, shuffle=True, seed=seed,
                             device=device)
        start = time.perf_counter()
        train_model(model, loader, exp.train, device=device)
        meta = {"spec": {"kind": "original", **train_spec(cell)},
                "train_s": time.perf_counter() - start}
        cache.save(key, model, meta)
        log.debug("trained original %s in %.1fs (cache %s)", cell.key, meta["train_s"], key)
    return model.eval(), meta


def _prepare_worker(cfg: RunConfig) -> None:
    """Worker processes start bare: set their thread count and register the user's plugins.
    Ctrl-C is the parent's to handle: a worker that took it would print its own traceback."""
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(cfg.threads)
    configure_backends(cfg.device)
    load_plugins(cfg.plugins, use_entry_points=False)


def train_original(cell: Cell, cfg: RunConfig) -> tuple[str, float]:
    """Phase one of a grid: (which original, its training time in seconds)."""
    _prepare_worker(cfg)
    exp = cell.experiment
    return f"{exp.dataset}/{exp.arch} seed {cell.seed}", ensure_original(cell, cfg)[1]["train_s"]


def _class_loaders(data: ImageData, forget: tuple[int, ...], device: torch.device, *,
                   split: str) -> dict:
    dataset, targets = ((data.test, data.test_targets) if split == "test"
                        else (data.train, data.train_targets))
    return {f"{part}_{split}": make_loader(dataset, class_indices(targets, forget,
                                                                  include=part == "forget"),
                                           batch_size=eval_batch_size(device), shuffle=False,
                                           device=device)
            for part in ("forget", "retain")}


def _build_task(cell: Cell, cls: type, data: ImageData, *, cfg: RunConfig, curves: bool,
                curve: list[dict[str, Any]], eval_seconds: list[float]) -> UnlearningTask:
    """Hand the method exactly what its ``needs`` declares, nothing more."""
    exp, device, seed = cell.experiment, torch.device(cfg.device), cell.seed
    needs = cls.needs

    def loader(include: bool):
        indices = class_indices(data.train_targets, cell.forget_classes, include=include)
        return make_loader(data.train, indices, batch_size=exp.train.batch_size, shuffle=True,
                           seed=seed, device=device)

    test_sets = _class_loaders(data, cell.forget_classes, device, split="test")

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
        make_model=_model_factory(exp, data, cfg) if "architecture" in needs else None,
        train_model=((lambda m, ld: train_model(m, ld, exp.train, device=device))
                     if "architecture" in needs else None),
        log=lambda **values: curve.append(values),
        evaluate=evaluate if curves else None,
    )


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


def _record_base(cell: Cell, cfg: RunConfig) -> dict[str, Any]:
    exp = cell.experiment
    return {"cell": cell.key, "config_hash": cell.config_hash, "dataset": exp.dataset,
            "arch": exp.arch, "forget_classes": cell.classes_text, "method": cell.label,
            "registered_method": cell.method, "seed": cell.seed, "params": cell.params,
            "param_sources": exp.param_sources.get(cell.label, {}),
            "train": exp.train.as_dict(), **exp.data_spec,
            "code_version": cell.code_version,
            "data_fingerprint": cell.context.data_fingerprint,
            "threads": cell.context.threads,
            **provenance(device=cfg.device, commit=cfg.git_commit)}


def run_cell(cell: Cell, cfg: RunConfig, *, curves: bool, markers: Path | None = None
             ) -> dict[str, Any]:
    """One cell end to end; failures come back as an error record instead of raising.

    While it runs, a marker file under ``markers`` names the cell, so that the parent can tell
    which cell a dead worker was running.
    """
    _prepare_worker(cfg)
    marker = None
    if markers is not None:
        marker = markers / hashlib.sha1(cell.key.encode()).hexdigest()
        marker.write_text(cell.key)
    try:
        cell, data = with_data(cell, cfg)
        base = _record_base(cell, cfg)
        original, meta = ensure_original(cell, cfg)
        if cell.method == "original":
            model, fields = original, {"time_s": meta["train_s"], "timings": {}, "curve": []}
        else:
            model, fields = _unlearn(cell, original, data, cfg=cfg, curves=curves)
        device = torch.device(cfg.device)
        metrics = evaluate_splits(
            model, device=device, seed=cell.seed,
            **_class_loaders(data, cell.forget_classes, device, split="train"),
            **_class_loaders(data, cell.forget_classes, device, split="test"))
        if cell.experiment.validation is not None:  # tuning's view: the forget-only score
            metrics[FORGET_AGREEMENT] = forget_agreement(
                model, original, forget_classes=cell.forget_classes, device=device,
                forget=_class_loaders(data, cell.forget_classes, device,
                                      split="test")["forget_test"])
        return {**base, **metrics, **fields}
    except Exception as exc:  # noqa: BLE001 - a failing cell must not stop the grid
        return {**_record_base(cell, cfg), "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)


def _died(cell: Cell, cfg: RunConfig, exc: BaseException) -> dict[str, Any]:
    return {**_record_base(cell, cfg),
            "error": f"the worker process running this cell died ({type(exc).__name__}: "
                     f"{str(exc).splitlines()[0][:200]}); killed by the out-of-memory "
                     "killer, or a crash in native code?",
            "traceback": ""}


def _markers_dir(cfg: RunConfig, grid: Grid) -> Path:
    """Per results directory and grid; the grid lock makes it this run's alone."""
    tag = hashlib.sha1(f"{cfg.results_dir.resolve()}/{grid.name}".encode()).hexdigest()[:16]
    folder = cfg.cache_dir / ".running" / tag
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink(missing_ok=True)
    return folder


def run_cells(cells: list[Cell], cfg: RunConfig, *, grid: Grid,
               on_record: Callable[[dict[str, Any]], None]) -> None:
    """Run ``cells``; when a worker dies, the cells that were running are rerun one at a time
    in a fresh worker, and the one that dies again becomes an error record."""
    markers = _markers_dir(cfg, grid)
    try:
        _run_with_markers(cells, cfg, grid=grid, on_record=on_record, markers=markers)
    finally:
        for marker in markers.iterdir():
            marker.unlink(missing_ok=True)
        for folder in (markers, markers.parent):
            try:
                folder.rmdir()
            except OSError:  # another grid's run is using it
                pass


def _run_with_markers(cells: list[Cell], cfg: RunConfig, *, grid: Grid, markers: Path,
                      on_record: Callable[[dict[str, Any]], None]) -> None:
    remaining = {c.key: c for c in cells}
    work = functools.partial(run_cell, curves=grid.curves, markers=markers)
    while remaining:
        try:
            for record in spread(work, [(c,) for c in remaining.values()], cfg):
                remaining.pop(record["cell"], None)
                on_record(record)
        except WORKER_DEATHS as exc:
            running = {m.read_text() for m in markers.iterdir()}
            suspects = [c for key, c in remaining.items() if key in running]
            log.warning("a worker process died (%s); rerunning the %d cell(s) it may have "
                        "been running one at a time", type(exc).__name__, len(suspects))
            if not suspects:  # it died before naming a cell: nothing to attribute it to
                suspects = list(remaining.values())[:1]
            for marker in markers.iterdir():
                marker.unlink(missing_ok=True)
            for cell in suspects:
                try:
                    record = run_isolated(work, cell, cfg)
                except WORKER_DEATHS as again:
                    record = _died(cell, cfg, again)
                remaining.pop(cell.key, None)
                on_record(record)


def run_grid(grid: Grid, cfg: RunConfig) -> tuple[int, int]:
    """Compute every missing cell; returns (cells run, cells failed). The caller holds the
    grid's lock."""
    out = runs_path(cfg.results_dir, grid.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    repair_tail(out)
    cells, pending = pending_cells(grid, cfg.results_dir, experiment_contexts(grid, cfg))
    log.info("grid %s: %d cells, %d already done, %d to run", grid.name, len(cells),
             len(cells) - len(pending), len(pending))
    if not pending:
        return 0, 0
    # Originals first, once each, so parallel cells never train the same model twice.
    originals = {original_key(c): c for c in pending}
    missing = [(c,) for key, c in originals.items()
               if not ModelCache(cfg.cache_dir).path(key).exists()]
    for which, train_s in spread(train_original, missing, cfg):
        log.info("trained original %s in %.1fs", which, train_s)
    errors = out.with_name("errors.jsonl")
    counts = {"done": 0, "failed": 0}

    def on_record(record: dict[str, Any]) -> None:
        counts["done"] += 1
        progress = f"[{counts['done']}/{len(pending)}] {record['cell']}"
        if "error" in record:
            counts["failed"] += 1
            append_record(errors, record)
            log.error("%s failed: %s", progress, record["error"])
            return
        append_record(out, record)
        log.info("%s: A_Df %.1f A_Dr %.1f MIA %.1f (%.1fs)", progress,
                 record["acc_forget_test"], record["acc_retain_test"], record["mia"],
                 record["time_s"])

    run_cells(pending, cfg, grid=grid, on_record=on_record)
    return len(pending), counts["failed"]
