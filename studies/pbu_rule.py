"""``python -m studies.pbu_rule``: how PBU's default logit anchor and learning rate were chosen.

Runs ``retrain`` and PBU variants (``logit_anchor`` x ``lr``) on the validation view
(``studies.sweep``) of two built-in experiments (digits as in ``quick``, Fashion-MNIST as in
``fashion``, SmallCNN, forget classes 2/6/8, seed 0) and prints each variant's gap to
retraining, |dA_Df| + |dA_Dr| on the validation split, the objective ``--tune`` uses. The
default is the variant with the smallest mean gap over both datasets; ``methods/pbu.py``
cites the run.
"""
from __future__ import annotations

import sys

from bench.harness.builtin_grids import BUILTIN_GRIDS
from bench.harness.grid import Grid
from studies.sweep import run_study, validation_grid

GRID_NAME = "pbu-rule"
ANCHORS = (3.0, 10.0, 30.0)
LEARNING_RATES = (3e-5, 1e-4)


def variant_name(anchor: float, lr: float) -> str:
    return f"pbu_a{anchor:g}_lr{lr:g}"


def study_grid() -> Grid:
    return validation_grid(GRID_NAME, variants=[
        {"name": variant_name(a, lr), "method": "pbu", "params": {"logit_anchor": a, "lr": lr}}
        for a in ANCHORS for lr in LEARNING_RATES], experiments=[
        BUILTIN_GRIDS["quick"]["experiments"][0], BUILTIN_GRIDS["fashion"]["experiments"][0]])


def main(argv: list[str] | None = None) -> int:
    return run_study(study_grid(), prog="python -m studies.pbu_rule", description=__doc__,
                     argv=argv)


if __name__ == "__main__":
    sys.exit(main())
