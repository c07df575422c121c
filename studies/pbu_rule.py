"""``python -m studies.pbu_rule``: how PBU's default logit anchor and learning rate were chosen.

Runs ``retrain`` and PBU variants (``logit_anchor`` x ``lr``) through the suite's own runner on
the *validation* view of two built-in experiments (digits as in ``quick``, Fashion-MNIST as in
``fashion``, SmallCNN, forget classes 2/6/8, seed 0): 20 % of each class's training images are
held out for evaluation and the test split is never read (``bench.data.validation_view``). It
prints each variant's gap to retraining, |dA_Df| + |dA_Dr| on the validation split, the
objective ``--tune`` uses. The default is the variant with the smallest mean gap over both
datasets; ``methods/pbu.py`` cites the run.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench.harness import execute, provenance
from bench.harness.builtin_grids import BUILTIN_GRIDS
from bench.harness.cells import current_records, runs_path
from bench.harness.config import RunConfig
from bench.harness.grid import Grid, parse_grid
from bench.harness.lock import grid_lock
from bench.harness.store import read_records
from bench.tuning.tuner import validation_experiment

GRID_NAME = "pbu-rule"
ANCHORS = (3.0, 10.0, 30.0)
LEARNING_RATES = (3e-5, 1e-4)


def variant_name(anchor: float, lr: float) -> str:
    return f"pbu_a{anchor:g}_lr{lr:g}"


def study_grid() -> Grid:
    variants = [{"name": variant_name(a, lr), "method": "pbu",
                 "params": {"logit_anchor": a, "lr": lr}}
                for a in ANCHORS for lr in LEARNING_RATES]
    experiments = []
    for source in (BUILTIN_GRIDS["quick"]["experiments"][0],
                   BUILTIN_GRIDS["fashion"]["experiments"][0]):
        keep = ("dataset", "arch", "forget_classes", "train", "train_per_class")
        experiments.append({k: source[k] for k in keep if k in source})
    grid = parse_grid({"name": GRID_NAME, "seeds": [0], "methods": ["retrain", *variants],
                       "experiments": experiments}, where=f"the {GRID_NAME} study")
    return dataclasses.replace(grid, experiments=tuple(
        validation_experiment(exp) for exp in grid.experiments))


def gaps(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Per variant and dataset: mean validation A_Df, A_Dr and gap to retraining."""
    frame = pd.DataFrame(records)
    keys = ["dataset", "forget_classes"]
    reference = frame[frame["method"] == "retrain"].set_index(keys)
    rows = []
    for _, r in frame[~frame["method"].isin(["retrain", "original"])].iterrows():
        ref = reference.loc[(r["dataset"], r["forget_classes"])]
        rows.append({"variant": r["method"], "dataset": r["dataset"],
                     "A_Df": r["acc_forget_test"], "A_Dr": r["acc_retain_test"],
                     "gap": abs(r["acc_forget_test"] - ref["acc_forget_test"])
                     + abs(r["acc_retain_test"] - ref["acc_retain_test"])})
    table = pd.DataFrame(rows).groupby(["variant", "dataset"]).mean().unstack("dataset")
    table[("gap", "mean")] = table["gap"].mean(axis=1)
    return table.sort_values(("gap", "mean")).round(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.pbu_rule", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results",
                        help="records go to <results-dir>/pbu-rule/, models to its .model_cache")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    grid = study_grid()
    results_dir = Path(args.results_dir)
    cfg = RunConfig(results_dir=results_dir, cache_dir=(results_dir / ".model_cache").resolve(),
                    device="cpu", jobs=args.jobs,
                    git_commit=provenance.git_commit(Path(__file__).resolve().parent.parent))
    with grid_lock(results_dir / grid.name):
        _, failed = execute.run_grid(grid, cfg)
    records, _ = current_records(grid, list(read_records(runs_path(results_dir, grid.name))),
                                 execute.experiment_contexts(grid, cfg))
    print(gaps(list(records.values())).to_string())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
