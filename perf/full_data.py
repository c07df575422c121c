"""``python -m perf full-data``: PBU end to end against retraining on the full training set.

PBU's selling point is cost: it touches the forget samples only, where retraining touches all
of the retain data again. This benchmark measures that claim where it matters, on a full
dataset (Fashion-MNIST's 60,000 training images by default), through the suite's own runner
so that both sides use exactly what a grid would run: the original is trained once with the
fashion grid's recipe and cached, then ``retrain`` (the same recipe on the retain data),
``pbu`` (exact Fisher on the forget data, then its optimisation) and ``pbu_mc`` (the same with
a one-draw Monte Carlo Fisher) are timed as grid cells, one after the other with every torch
thread, and the ratios are printed with the models' accuracies. The records land in ``<results-dir>/full-data/`` like any grid's.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from bench.harness import execute, provenance
from bench.harness.builtin_grids import BUILTIN_GRIDS
from bench.harness.cells import current_records, runs_path
from bench.harness.config import RunConfig
from bench.harness.grid import Grid, parse_grid
from bench.harness.lock import grid_lock
from bench.harness.store import read_records

GRID_NAME = "full-data"
# pbu_mc: PBU with a one-draw Monte Carlo Fisher instead of the exact one, the cheaper
# estimate the suite also offers; it shows what the exact Fisher costs.
METHODS = ("retrain", "pbu", "pbu_mc")
_METHOD_ENTRIES = ["retrain", "pbu",
                   {"name": "pbu_mc", "method": "pbu", "params": {"fisher": "mc"}}]


def full_data_grid(*, dataset: str, archs: list[str], forget_class: int, seed: int) -> Grid:
    """One forget class and one seed on the whole dataset, with the fashion grid's recipe."""
    recipe = BUILTIN_GRIDS["fashion"]["experiments"][0]["train"]
    return parse_grid({
        "name": GRID_NAME, "seeds": [seed], "methods": _METHOD_ENTRIES,
        "experiments": [{"dataset": dataset, "arch": arch, "forget_classes": [[forget_class]],
                         "train": dict(recipe)} for arch in archs],
    }, where=f"the {GRID_NAME} benchmark")


def run(args: argparse.Namespace) -> int:
    grid = full_data_grid(dataset=args.dataset, archs=args.archs, forget_class=args.forget_class,
                          seed=args.seed)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    results_dir = Path(args.results_dir)
    cfg = RunConfig(results_dir=results_dir, cache_dir=(results_dir / ".model_cache").resolve(),
                    data_root=args.data_root, device="cpu", jobs=1,
                    threads=torch.get_num_threads(),
                    git_commit=provenance.git_commit(Path(__file__).resolve().parent.parent))
    for exp in grid.experiments:  # a missing dataset fails here, before anything is trained
        execute.experiment_data(exp, root=args.data_root, download=False)
    with grid_lock(results_dir / grid.name):
        _, failed = execute.run_grid(grid, cfg)
    records, _ = current_records(grid, list(read_records(runs_path(results_dir, grid.name))),
                                 execute.experiment_contexts(grid, cfg))
    print(report(list(records.values())))
    return 1 if failed else 0


def report(records: list[dict[str, Any]]) -> str:
    """Per architecture: each method's time and accuracies, and each PBU's share of
    retraining's time."""
    header = (f"{'arch':14s} {'method':8s} {'time (s)':>9s} {'Fisher (s)':>10s} "
              f"{'A_Df':>6s} {'A_Dr':>6s}")
    lines = [header]
    by_arch: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        by_arch.setdefault(record["arch"], {})[record["method"]] = record
    for arch, methods in sorted(by_arch.items()):
        for name in ("original", *METHODS):
            if name not in methods:
                continue
            r = methods[name]
            fisher = r.get("timings", {}).get("fisher_s")
            lines.append(f"{arch:14s} {name:8s} {r['time_s']:9.1f} "
                         f"{'-' if fisher is None else f'{fisher:.1f}':>10s} "
                         f"{r['acc_forget_test']:6.2f} {r['acc_retain_test']:6.2f}")
        for name in METHODS[1:]:
            if name in methods and "retrain" in methods:
                ratio = methods[name]["time_s"] / methods["retrain"]["time_s"]
                lines.append(f"{arch:14s} {name} takes {100 * ratio:.1f} % of retraining's time")
    return "\n".join(lines)
