"""``python -m studies.pbu_pairs``: PBU's logit anchor when several classes are forgotten at
once.

Runs ``retrain`` and PBU at ``logit_anchor`` 3, 10 and 30 (the default, chosen on single
classes by ``studies.pbu_rule``) on the validation view (``studies.sweep``) of digits as in
``all-methods``, forgetting the pairs 2+6, 6+8, 2+8 and the triple 2+6+8, seeds 0-2, and
prints each variant's gap to retraining on the validation split.
"""
from __future__ import annotations

import sys

from bench.harness.builtin_grids import BUILTIN_GRIDS
from bench.harness.grid import Grid
from studies.sweep import run_study, validation_grid

GRID_NAME = "pbu-pairs"
FORGET_SETS = [[2, 6], [6, 8], [2, 8], [2, 6, 8]]
ANCHORS = (3.0, 10.0, 30.0)


def study_grid() -> Grid:
    digits = {**BUILTIN_GRIDS["all-methods"]["experiments"][0], "forget_classes": FORGET_SETS}
    return validation_grid(GRID_NAME, seeds=(0, 1, 2), experiments=[digits], variants=[
        {"name": f"pbu_a{a:g}", "method": "pbu", "params": {"logit_anchor": a}}
        for a in ANCHORS])


def main(argv: list[str] | None = None) -> int:
    return run_study(study_grid(), prog="python -m studies.pbu_pairs", description=__doc__,
                     argv=argv)


if __name__ == "__main__":
    sys.exit(main())
