"""Shared fixtures: one tiny in-process grid with a cached original model, one finished CLI run.

Everything runs on the CPU with a single torch thread: on a shared 2-core machine torch's
default (one thread per core) oversubscribes and makes training an order of magnitude slower.
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
RUN_BENCH = REPO / "run_bench.py"

# One thread for torch/BLAS in subprocesses as well.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "OPENBLAS_NUM_THREADS": "1"}

# The CLI tests' grid: 1 dataset x 1 arch x 1 class x (original + 2 methods) x 1 seed.
# PBU first so that a run killed after its first record (the original) is mid-grid.
TINY_GRID_YAML = """\
name: tiny
seeds: [0]
methods: [pbu, finetune]
experiments:
  - dataset: digits
    arch: smallcnn
    forget_classes: [[2]]
    train: {epochs: 3}
    method_params: {finetune: {epochs: 1, lr: 0.003}, pbu: {lr: 0.00003}}
"""
TINY_CELLS = 3


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------- command line


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(args: list[str], *, cwd: Path, timeout: float = 240) -> CliResult:
    """``python run_bench.py ARGS`` in ``cwd``; stdout/stderr as text."""
    proc = subprocess.run([sys.executable, str(RUN_BENCH), *map(str, args)], cwd=cwd,
                          env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=timeout,
                          check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def start_cli(args: list[str], *, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(RUN_BENCH), *map(str, args)], cwd=cwd,
                            env=SUBPROCESS_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.fixture(scope="session")
def cli() -> Callable[..., CliResult]:
    return run_cli


def write_grid(folder: Path, text: str, name: str = "grid.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@dataclass
class FinishedRun:
    """A completed ``run_bench.py --grid tiny.yaml`` (read-only: copy it before changing it)."""

    root: Path          # cwd of the run
    grid_file: Path
    results: Path       # --results-dir
    plots: Path         # --plots-dir
    result: CliResult

    @property
    def grid_dir(self) -> Path:
        return self.results / "tiny"

    def copy_to(self, dest: Path) -> FinishedRun:
        """A private copy (mtimes preserved) that a test may run more cells into."""
        shutil.copytree(self.root, dest, dirs_exist_ok=True)
        return FinishedRun(root=dest, grid_file=dest / self.grid_file.name,
                           results=dest / self.results.name, plots=dest / self.plots.name,
                           result=self.result)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> FinishedRun:
    root = tmp_path_factory.mktemp("finished_run")
    grid_file = write_grid(root, TINY_GRID_YAML, "tiny.yaml")
    result = run_cli(["--grid", grid_file.name, "--results-dir", "results", "--plots-dir",
                      "plots"], cwd=root)
    assert result.returncode == 0, result.stderr
    return FinishedRun(root=root, grid_file=grid_file, results=root / "results",
                       plots=root / "plots", result=result)


# ---------------------------------------------------------------- in-process harness


@pytest.fixture(scope="session")
def digits_data():
    from bench import runner

    return runner.cached_dataset("digits", None, False, 0)


@pytest.fixture(scope="session")
def unit_grid():
    """The quick grid's method settings, 8 training epochs, all methods, classes 2 and 2+6."""
    from bench import grids

    raw = copy.deepcopy(grids.BUILTIN_GRIDS["quick"])
    raw.update(name="unit", seeds=[0], curves=False,
               methods=[*grids.PAPER_METHODS, "pbu_official"])
    raw["experiments"][0]["train"]["epochs"] = 8
    raw["experiments"][0]["forget_classes"] = [[2], [2, 6]]
    return grids.parse_grid(raw)


@pytest.fixture(scope="session")
def run_cfg(tmp_path_factory):
    """RunConfig whose model cache is shared by the whole session (one original training)."""
    from bench import runner

    root = tmp_path_factory.mktemp("harness")
    return runner.RunConfig(results_dir=root / "results", cache_dir=root / "cache",
                            device="cpu")


def find_cell(grid, label: str, classes: tuple[int, ...] = (2,), seed: int = 0):
    from bench import runner

    return next(c for c in runner.grid_cells(grid)
                if c.label == label and c.forget_classes == classes and c.seed == seed)


@pytest.fixture(scope="session")
def original(unit_grid, run_cfg) -> torch.nn.Module:
    """The unit grid's original smallcnn (trained once, then read from the cache)."""
    from bench import runner

    model, _ = runner.ensure_original(unit_grid.experiments[0], 0, run_cfg)
    return model


@pytest.fixture(scope="session")
def original_record(unit_grid, run_cfg, original) -> dict:
    from bench import runner

    record = runner.run_cell(find_cell(unit_grid, "original"), run_cfg, curves=False)
    assert "error" not in record, record.get("traceback")
    return record


@pytest.fixture
def clean_registry(monkeypatch):
    """A private copy of the method registry: registrations and plugin modules a test adds
    vanish after it."""
    from methods import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    before = {name for name in sys.modules if name.startswith("unlearning_plugin_")}
    yield registry._REGISTRY
    for name in [n for n in sys.modules if n.startswith("unlearning_plugin_")]:
        if name not in before:
            del sys.modules[name]
