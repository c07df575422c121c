"""Helpers and constants shared by the test modules (fixtures live in conftest.py).

Test modules import from here (``from helpers import ...``); pytest puts this folder on
``sys.path`` because ``tests/`` is not a package.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from bench.harness.builtin_grids import PAPER_METHODS

__all__ = [
    "OUT",
    "PAPER_METHODS",
    "REPO",
    "RUN_BENCH",
    "SUBPROCESS_ENV",
    "TINY_CELLS",
    "TINY_GRID_YAML",
    "CliResult",
    "FinishedRun",
    "assert_clean_bad_input",
    "find_cell",
    "grid_yaml",
    "make_case",
    "run_cli",
    "run_main",
    "start_cli",
    "tree",
    "write_grid",
]

REPO = Path(__file__).resolve().parent.parent
RUN_BENCH = REPO / "run_bench.py"

# One thread for torch/BLAS in subprocesses as well; the repository first on their path.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "OPENBLAS_NUM_THREADS": "1",
                  "PYTHONPATH": os.pathsep.join(
                      p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}

# Output folders every CLI test passes, relative to its working directory.
OUT = ["--results-dir", "results", "--plots-dir", "plots"]

# The CLI tests' grid: 1 dataset x 1 arch x 1 class x (original + 2 methods) x 1 seed.
TINY_GRID_YAML = """\
name: tiny
seeds: [0]
methods: [pbu, finetune]
experiments:
  - dataset: digits
    arch: smallcnn
    forget_classes: [[2]]
    train: {epochs: 3}
    method_params: {finetune: {epochs: 1, lr: 0.003}, pbu: {epochs: 5}}
"""
TINY_CELLS = 3


# ---------------------------------------------------------------- files


def write_grid(folder: Path, text: str, name: str = "grid.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def grid_yaml(**experiment) -> str:
    """A one-experiment grid file; keyword arguments replace the experiment's fields."""
    fields = {"dataset": "digits", "arch": "smallcnn", "forget_classes": "[[2]]",
              "train": "{epochs: 1}", **experiment}
    body = "\n".join(f"    {key}: {value}" for key, value in fields.items())
    return f"name: bad\nseeds: [0]\nmethods: [finetune]\nexperiments:\n  - {body.lstrip()}\n"


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def make_case(folder: Path, files: dict) -> set[str]:
    """Create the case's files (None = a folder, bytes = raw content); returns the listing."""
    folder.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = folder / rel
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return tree(folder)


# ---------------------------------------------------------------- command line


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(args: list[str], *, cwd: Path, timeout: float = 240) -> CliResult:
    """``python run_bench.py ARGS`` in ``cwd``; stdout/stderr as text."""
    proc = subprocess.run([sys.executable, str(RUN_BENCH), *map(str, args)], cwd=cwd,
                          env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=timeout,
                          check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def start_cli(args: list[str], *, cwd: Path, driver: Path | None = None) -> subprocess.Popen:
    """``run_bench.py ARGS`` (or another ``driver`` script) in its own process group."""
    return subprocess.Popen([sys.executable, str(driver or RUN_BENCH), *map(str, args)], cwd=cwd,
                            env=SUBPROCESS_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def run_main(folder: Path, files: dict, args: list[str], capsys, monkeypatch):
    """``bench.cli.main ARGS OUT`` in-process, in ``folder`` after creating ``files``:
    (return code, stderr, listing before, listing after)."""
    from bench import cli

    before = make_case(folder, files)
    monkeypatch.chdir(folder)
    capsys.readouterr()
    returncode = cli.main([*args, *OUT])
    return returncode, capsys.readouterr().err, before, tree(folder)


def assert_clean_bad_input(outcome, must_name: str) -> None:
    """Exit status 2, one ``run_bench.py: error:`` line naming ``must_name``, nothing written."""
    returncode, stderr, before, after = outcome
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == 2, (returncode, stderr[-2000:])
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert must_name in lines[0], stderr
    assert lines[0].startswith("run_bench.py: error: ")
    assert after == before, f"files written: {sorted(after - before)}"
    assert "results" not in after and "plots" not in after


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


# ---------------------------------------------------------------- in-process harness


def find_cell(grid, label: str, classes: tuple[int, ...] = (2,), seed: int = 0):
    from bench.harness.cells import grid_cells

    return next(c for c in grid_cells(grid)
                if c.label == label and c.forget_classes == classes and c.seed == seed)
