"""``python -m studies.ssd_rule``: how SSD's threshold for the ``all-methods`` grid was chosen.

With the official single-class batches, I_f / I_d is at most C / k (``methods/ssd.py``), so
the paper's absolute alpha 10 selects nothing on 10 classes, and an absolute alpha that suits
one forget class is above the ceiling of two. This runs ``retrain`` and SSD variants (absolute
alpha, and ``relative_alpha`` fractions of the ceiling) on the validation view
(``studies.sweep``) of digits as in ``all-methods`` (forget sets 2, 6, 8 and 2+6, seeds 0-2),
lambda 1, and prints each variant's mean and worst gap to retraining on the validation split.
The ``all-methods`` grid takes the variant with the smallest mean gap.
"""
from __future__ import annotations

import sys

from bench.harness.builtin_grids import BUILTIN_GRIDS
from bench.harness.grid import Grid
from studies.sweep import run_study, validation_grid

GRID_NAME = "ssd-rule"
ABSOLUTE = (2.0, 3.0, 5.0)
RELATIVE = (0.3, 0.5, 0.6, 0.7, 0.85)


def study_grid() -> Grid:
    variants = [{"name": f"ssd_abs{a:g}", "method": "ssd", "params": {"alpha": a}}
                for a in ABSOLUTE]
    variants += [{"name": f"ssd_rel{a:g}", "method": "ssd",
                  "params": {"alpha": a, "relative_alpha": True}} for a in RELATIVE]
    return validation_grid(GRID_NAME, variants=variants, seeds=(0, 1, 2),
                           experiments=[BUILTIN_GRIDS["all-methods"]["experiments"][0]])


def main(argv: list[str] | None = None) -> int:
    return run_study(study_grid(), prog="python -m studies.ssd_rule", description=__doc__,
                     argv=argv)


if __name__ == "__main__":
    sys.exit(main())
