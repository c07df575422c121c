"""Turns a grid into cells, runs the missing ones (in parallel) and appends their records."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bench.accel import configure_backends, eval_batch_size, prepare_model
from bench.cache import ModelCache, content_key
from bench.data import (
    ImageData,
    class_indices,
    load_dataset,
    make_loader,
    subsample_per_class,
)
from bench.errors import BenchInputError
from bench.grids import Experiment, Grid, resolve_params
from bench.metrics import accuracy, evaluate_splits, predict_logits
from bench.models import build_model
from bench.store import append_record, read_records, repair_tail
from bench.training import RECIPE_VERSION, train_model
from methods import UnlearningTask, get_method, load_plugins

log = logging.getLogger(__name__)

@dataclass(frozen=True, kw_only=True)
class RunConfig:
    results_dir: Path
    cache_dir: Path
    data_root: str | None = None
    download: bool = False
    device: str = "cpu"
    jobs: int = 1
    threads: int = 0            # torch threads per worker; 0 = leave torch's setting
    plugins: tuple[str, ...] = ()  # re-imported in worker processes
    git_commit: str = "unknown"
    backend: str = "loky"        # joblib backend of _spread: "loky" (this machine) or "dask"
    scheduler: str | None = None  # the Dask scheduler's address when backend is "dask"


@dataclass(frozen=True, kw_only=True)
class Cell:
    experiment: Experiment
    forget_classes: tuple[int, ...]
    label: str                   # a grid method label, or "original"
    method: str                  # the registered method ("original" for the initial model)
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def classes_text(self) -> str:
        return "+".join(map(str, self.forget_classes))

    @property
    def key(self) -> str:
        e = self.experiment
        return f"{e.dataset}/{e.arch}/{self.classes_text}/{self.label}/{self.seed}"

    @property
    def config_hash(self) -> str:
        e = self.experiment
        # arch is in the key; model_spec adds only what goes beyond it (starting weights).
        extra = {k: v for k, v in e.model_spec.items() if k != "arch"}
        return content_key({"train": e.train.as_dict(), **e.data_spec, **extra,
                            "method": self.method, "params": self.params,
                            "recipe_version": RECIPE_VERSION})


def grid_cells(grid: Grid) -> list[Cell]:
    cells = []
    for exp in grid.experiments:
        for classes in exp.forget_classes:
            for seed in grid.seeds:
                cells.append(Cell(experiment=exp, forget_classes=classes, label="original",
                                  method="original", seed=seed))
                for spec in grid.methods:
                    cells.append(Cell(experiment=exp, forget_classes=classes, label=spec.label,
                                      method=spec.method, seed=seed,
                                      params=resolve_params(grid, exp, spec.label)))
    return cells


def runs_path(results_dir: Path, grid_name: str) -> Path:
    return results_dir / grid_name / "runs.jsonl"


def pending_cells(grid: Grid, results_dir: Path) -> tuple[list[Cell], list[Cell]]:
    """(all cells, cells without a record made under their current configuration)."""
    done = {(r["cell"], r["config_hash"]) for r in read_records(runs_path(results_dir, grid.name))}
    cells = grid_cells(grid)
    return cells, [c for c in cells if (c.key, c.config_hash) not in done]


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


def _train_spec(exp: Experiment, seed: int) -> dict[str, Any]:
    return {**exp.data_spec, **exp.model_spec,
            "train": exp.train.as_dict(), "seed": seed, "recipe_version": RECIPE_VERSION}


def _original_spec(exp: Experiment, seed: int) -> dict[str, Any]:
    return {"kind": "original", **_train_spec(exp, seed)}


def original_key(exp: Experiment, seed: int) -> str:
    """Cache key of the original model, shared by every cell of ``exp`` and ``seed``."""
    return content_key(_original_spec(exp, seed))


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
    return _cached_training(spec=_original_spec(exp, seed), exp=exp, data=data, seed=seed, cfg=cfg,
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
    cache_key = None
    if getattr(cls, "cache_model", False):
        cache_key = content_key({"kind": cell.method, "params": cell.params,
                                 "forget_classes": cell.forget_classes,
                                 **_train_spec(cell.experiment, cell.seed)})
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
        return {**base, **metrics, **fields, **_provenance(cfg)}
    except Exception as exc:  # noqa: BLE001 - a failing cell must not stop the grid
        return {**base, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), **_provenance(cfg)}


def _provenance(cfg: RunConfig) -> dict[str, Any]:
    import sklearn
    import torchvision

    return {"device": cfg.device, "git_commit": cfg.git_commit, "host": platform.node(),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__,
                         "scikit-learn": sklearn.__version__}}


def git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, timeout=10,
                               check=True).stdout
        return out + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _worker_configs(cfg: RunConfig) -> list[RunConfig]:
    """On a multi-GPU box, "cuda" is spread over the devices: cell i goes to cuda:i mod n."""
    count = torch.cuda.device_count() if cfg.device == "cuda" else 0
    if count < 2 or cfg.jobs < 2:
        return [cfg]
    return [dataclasses.replace(cfg, device=f"cuda:{i}") for i in range(count)]


@contextlib.contextmanager
def dask_client(address: str):
    """A ``distributed.Client`` connected to ``address``, closed on exit; a missing package or an
    unreachable scheduler is bad input (the connect timeout is dask's
    ``distributed.comm.timeouts.connect``)."""
    try:
        from distributed import Client
    except ImportError:
        raise BenchInputError("--backend dask needs dask.distributed, which is not installed: "
                              "pip install -e '.[dask]'") from None
    try:
        client = Client(address, set_as_default=False)
    except (OSError, ValueError) as exc:  # refused, timed out, or not an address at all
        raise BenchInputError(f"--scheduler {address!r}: cannot connect to a Dask scheduler "
                              f"({exc})") from None
    with client:
        yield client


@contextlib.contextmanager
def _joblib_backend(cfg: RunConfig):
    """Loky's worker processes on this machine, or the Dask cluster's workers."""
    if cfg.backend != "dask":
        yield
        return
    from joblib import parallel_config

    with dask_client(cfg.scheduler) as client, parallel_config(backend="dask", client=client):
        yield


def _spread(fn, argument_lists: list[tuple], cfg: RunConfig):
    """``fn(*args, cfg)`` for each argument list: in joblib workers when ``cfg.jobs > 1``,
    results in order of completion; in this process otherwise."""
    from joblib import Parallel, delayed

    if cfg.jobs < 2 or len(argument_lists) < 2:
        yield from (fn(*args, cfg) for args in argument_lists)
        return
    # This machine's GPU count says nothing about a cluster's workers: each uses its own "cuda".
    configs = [cfg] if cfg.backend == "dask" else _worker_configs(cfg)
    # A generator, so that the Dask client stays connected until the last result is taken.
    with _joblib_backend(cfg):
        yield from Parallel(n_jobs=min(cfg.jobs, len(argument_lists)),
                            return_as="generator_unordered")(
            delayed(fn)(*args, configs[i % len(configs)]) for i, args in enumerate(argument_lists))


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
    for which, train_s in _spread(train_original, missing, cfg):
        log.info("trained original %s in %.1fs", which, train_s)
    failed = 0
    errors = out.with_name("errors.jsonl")
    results = _spread(functools.partial(run_cell, curves=grid.curves),
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
