"""A cell's data: each dataset loaded once per process, and its fingerprint checked."""
from __future__ import annotations

import dataclasses
import functools

from bench.data import ImageData, load_dataset, subsample_per_class, validation_view
from bench.errors import BenchInputError
from bench.harness.cells import Cell, Context
from bench.harness.config import RunConfig
from bench.harness.grid import Experiment, Grid
from bench.harness.versions import data_fingerprint


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
