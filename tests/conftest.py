"""Shared fixtures: one tiny in-process grid with a cached original model, one finished CLI run.

Helpers and constants live in helpers.py. Everything runs on the CPU with a single torch
thread: on a shared 2-core machine torch's default (one thread per core) oversubscribes and
makes training an order of magnitude slower.
"""
from __future__ import annotations

import copy
import sys

import pytest
import torch
from helpers import OUT, TINY_GRID_YAML, FinishedRun, find_cell, run_cli, write_grid


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> FinishedRun:
    """``run_bench.py --grid tiny.yaml`` run to completion once, as a real process."""
    root = tmp_path_factory.mktemp("finished_run")
    grid_file = write_grid(root, TINY_GRID_YAML, "tiny.yaml")
    result = run_cli(["--grid", grid_file.name, *OUT], cwd=root)
    assert result.returncode == 0, result.stderr
    return FinishedRun(root=root, grid_file=grid_file, results=root / "results",
                       plots=root / "plots", result=result)


# ---------------------------------------------------------------- in-process harness


@pytest.fixture(scope="session")
def digits_data():
    from bench.harness.execute import cached_dataset

    return cached_dataset("digits", None, False, 0)[0]


@pytest.fixture(scope="session")
def unit_grid():
    """The quick grid's method settings, 8 training epochs, all methods, classes 2 and 2+6."""
    from bench.harness.builtin_grids import BUILTIN_GRIDS, PAPER_METHODS, PUBLISHED_VARIANTS
    from bench.harness.grid import parse_grid

    raw = copy.deepcopy(BUILTIN_GRIDS["quick"])
    raw.update(name="unit", seeds=[0], curves=False,
               methods=[*PAPER_METHODS, "pbu_official", *PUBLISHED_VARIANTS])
    raw["experiments"][0]["train"]["epochs"] = 8
    raw["experiments"][0]["forget_classes"] = [[2], [2, 6]]
    return parse_grid(raw)


@pytest.fixture(scope="session")
def run_cfg(tmp_path_factory):
    """RunConfig whose model cache is shared by the whole session (one original training)."""
    from bench.harness.config import RunConfig

    root = tmp_path_factory.mktemp("harness")
    return RunConfig(results_dir=root / "results", cache_dir=root / "cache", device="cpu")


@pytest.fixture(scope="session")
def original(unit_grid, run_cfg) -> torch.nn.Module:
    """The unit grid's original smallcnn (trained once, then read from the cache)."""
    from bench.harness.execute import ensure_original

    model, _ = ensure_original(find_cell(unit_grid, "original"), run_cfg)
    return model


@pytest.fixture(scope="session")
def original_record(unit_grid, run_cfg, original) -> dict:
    from bench.harness.execute import run_cell

    record = run_cell(find_cell(unit_grid, "original"), run_cfg, curves=False)
    assert "error" not in record, record.get("traceback")
    return record


@pytest.fixture
def clean_registry():
    """The method registry as it was before the test: registrations and plugin modules a test
    adds vanish after it."""
    from methods import METHODS

    saved = METHODS.snapshot()
    before = {name for name in sys.modules if name.startswith("unlearning_plugin_")}
    yield METHODS
    METHODS.restore(saved)
    for name in [n for n in sys.modules if n.startswith("unlearning_plugin_")]:
        if name not in before:
            del sys.modules[name]
