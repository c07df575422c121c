"""What the studies share: method variants run by the suite's own runner on the *validation*
view of built-in experiments, scored by ``--tune``'s gap to retraining.

The validation view holds out 20 % of each class's training images for evaluation and never
reads the test split (``bench.data.validation_view``), so a default chosen here was not chosen
on the numbers the tables report.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from bench.harness import execute, provenance
from bench.harness.cells import current_records, runs_path
from bench.harness.config import RunConfig
from bench.harness.grid import Grid, parse_grid
from bench.harness.lock import grid_lock
from bench.harness.store import read_records
from bench.tuning.objective import OBJECTIVES
from bench.tuning.tuner import validation_experiment

RETRAIN_GAP = OBJECTIVES["retrain-gap"]   # the objective --tune minimises
EXPERIMENT_KEYS = ("dataset", "arch", "forget_classes", "train", "train_per_class")


def validation_grid(name: str, *, variants: list[dict[str, Any]],
                    experiments: list[dict[str, Any]], seeds: tuple[int, ...] = (0,)) -> Grid:
    """``retrain`` and ``variants`` on the validation views of ``experiments`` (built-in
    experiment dicts; their method overrides are left out, the variants say everything)."""
    grid = parse_grid({"name": name, "seeds": list(seeds), "methods": ["retrain", *variants],
                       "experiments": [{k: e[k] for k in EXPERIMENT_KEYS if k in e}
                                       for e in experiments]}, where=f"the {name} study")
    return dataclasses.replace(grid, experiments=tuple(
        validation_experiment(exp) for exp in grid.experiments))


def gaps(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Per variant and dataset: mean validation A_Df, A_Dr and gap to retraining, |dA_Df| +
    |dA_Dr|, over forget sets and seeds; the worst cell's gap beside the mean, sorted by the
    mean over datasets."""
    frame = pd.DataFrame(records)
    keys = ["dataset", "forget_classes", "seed"]
    reference = frame[frame["method"] == "retrain"].set_index(keys)
    rows = []
    for _, r in frame[~frame["method"].isin(["retrain", "original"])].iterrows():
        gap = RETRAIN_GAP.score(r, reference.loc[(r["dataset"], r["forget_classes"], r["seed"])])
        rows.append({"variant": r["method"], "dataset": r["dataset"],
                     "A_Df": r["acc_forget_test"], "A_Dr": r["acc_retain_test"],
                     "gap": gap, "worst": gap})
    table = (pd.DataFrame(rows).groupby(["variant", "dataset"])
             .agg({"A_Df": "mean", "A_Dr": "mean", "gap": "mean", "worst": "max"})
             .unstack("dataset"))
    table[("gap", "mean")] = table["gap"].mean(axis=1)
    return table.sort_values(("gap", "mean")).round(2)


def run_study(grid: Grid, *, prog: str, description: str, argv: list[str] | None) -> int:
    """The command line of a study: run ``grid`` (resuming), print the gaps table."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results",
                        help=f"records go to <results-dir>/{grid.name}/, models to its "
                             ".model_cache")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    results_dir = Path(args.results_dir)
    cfg = RunConfig(results_dir=results_dir, cache_dir=(results_dir / ".model_cache").resolve(),
                    device="cpu", jobs=args.jobs,
                    git_commit=provenance.git_commit(Path(__file__).resolve().parent.parent))
    with grid_lock(results_dir / grid.name):
        _, failed = execute.run_grid(grid, cfg)
    records, _ = current_records(grid, list(read_records(runs_path(results_dir, grid.name))),
                                 execute.experiment_contexts(grid, cfg))
    labels = {spec.label for spec in grid.methods}   # not variants a former version listed
    print(gaps([r for r in records.values() if r["method"] in labels]).to_string())
    return 1 if failed else 0
