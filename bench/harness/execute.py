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
from filelock import FileLock

from bench.data import ImageData, class_indices, make_loader
from bench.harness.accel import configure_backends, eval_batch_size, prepare_model
from bench.harness.cache import ModelCache
from bench.harness.celldata import (  # noqa: F401  (cli and tests reach them through here)
    cached_dataset,
    experiment_contexts,
    experiment_data,
    with_data,
)
from bench.harness.cells import (
    Cell,
    original_key,
    pending_cells,
    runs_path,
    train_spec,
    unlearned_key,
)
from bench.harness.config import RunConfig
from bench.harness.grid import Experiment, Grid
from bench.harness.parallel import WORKER_DEATHS, run_isolated, spread
from bench.harness.provenance import finished_now, provenance
from bench.harness.store import append_record, repair_tail
from bench.metrics import accuracy, paper_metrics, predict_logits, split_logits
from bench.metrics.extended import CellInputs, extended_metrics
from bench.metrics.shadows import SHADOW_FIELD, shadow_payload
from bench.models import build_model
from bench.tuning.objective import FORGET_AGREEMENT, forget_agreement
from methods import UnlearningTask, get_method, load_plugins
from methods.training import train_model

log = logging.getLogger(__name__)


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
    """Run the cell's method on a copy of the original; returns (model, timing/curve fields).
    A ``cache_model`` method's model is read from the cache, or computed and stored under the
    entry's file lock, so that cells running in parallel compute it once."""
    cls = get_method(cell.method)
    if not cls.cache_model:
        return _run_method(cell, cls, original, data, cfg=cfg, curves=curves)
    cache, key = ModelCache(cfg.cache_dir), unlearned_key(cell)
    cache.root.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{cache.path(key)}.lock"):
        model = _model_factory(cell.experiment, data, cfg, initialised=False)()
        meta = cache.load(key, model)
        if meta is not None:
            return model.eval(), meta["fields"]
        model, fields = _run_method(cell, cls, original, data, cfg=cfg, curves=curves)
        cache.save(key, model, {"fields": fields})
    return model, fields


def _run_method(cell: Cell, cls: type, original: torch.nn.Module, data: ImageData, *,
                cfg: RunConfig, curves: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
    curve: list[dict[str, Any]] = []
    eval_seconds: list[float] = []
    task = _build_task(cell, cls, data, cfg=cfg, curves=curves, curve=curve,
                       eval_seconds=eval_seconds)
    torch.manual_seed(cell.seed)
    method = cls(**cell.params)
    start = time.perf_counter()
    model = method.unlearn(copy.deepcopy(original), task)
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start - sum(eval_seconds)
    return model.eval(), {"time_s": elapsed, "timings": dict(task.timings), "curve": curve}


def _retrained(cell: Cell, original: torch.nn.Module, data: ImageData, *, cfg: RunConfig
               ) -> torch.nn.Module:
    """The retrained model of the cell's experiment, seed and forget classes: the very cache
    entry of the grid's ``retrain`` cell, trained here if that cell has not run yet."""
    params = cell.experiment.params.get("retrain", get_method("retrain").default_params())
    reference = dataclasses.replace(cell, label="retrain", method="retrain", params=params)
    return _unlearn(reference, original, data, cfg=cfg, curves=False)[0]


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
    """``_run_cell``'s record, stamped when the cell finished (its other provenance is taken
    when the cell starts)."""
    record = _run_cell(cell, cfg, curves=curves, markers=markers)
    return {**record, "finished_at": finished_now()}


def _run_cell(cell: Cell, cfg: RunConfig, *, curves: bool, markers: Path | None = None
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
        loaders = {**_class_loaders(data, cell.forget_classes, device, split="train"),
                   **_class_loaders(data, cell.forget_classes, device, split="test")}
        logits = split_logits(model, loaders, device=device)
        if cell.experiment.validation is not None:
            # Tuning's view: its objectives read the paper's accuracies and the forget-only
            # score; the costlier metrics beyond the paper are left to the grid's own cells.
            return {**base, **paper_metrics(logits, seed=cell.seed), **fields,
                    FORGET_AGREEMENT: forget_agreement(
                        model, original, forget_classes=cell.forget_classes, device=device,
                        forget=loaders["forget_test"])}
        start = time.perf_counter()
        retrained = (model if cell.method == "retrain"
                     else _retrained(cell, original, data, cfg=cfg))
        reference_s = time.perf_counter() - start
        extra = extended_metrics(
            model=model, original=original, retrained=retrained, logits=logits,
            loaders=loaders, is_original=cell.method == "original",
            inputs=CellInputs(data=data, forget_classes=cell.forget_classes, seed=cell.seed,
                              device=device, eval_batch_size=eval_batch_size(device)))
        timings = {**fields["timings"], "metric_reference_s": reference_s,
                   **extra.pop("metric_timings")}
        shadow = {SHADOW_FIELD: shadow_payload(logits)} if cell.shadow_scores else {}
        return {**base, **paper_metrics(logits, seed=cell.seed), **extra, **fields,
                "timings": timings, **shadow}
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
    shadow_total = sum(c.shadow_scores for c in cells)
    pending_shadows = {c.key for c in pending if c.shadow_scores}
    counts = {"done": 0, "failed": 0, "shadows": shadow_total - len(pending_shadows)}

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
        if record["cell"] in pending_shadows:
            counts["shadows"] += 1
            log.info("shadow models: %d of %d", counts["shadows"], shadow_total)

    run_cells(pending, cfg, grid=grid, on_record=on_record)
    return len(pending), counts["failed"]
