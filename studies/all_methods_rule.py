"""``python -m studies.all_methods_rule``: how the ``all-methods`` grid's settings for the
methods whose paper defaults do not forget on digits were chosen.

Runs ``retrain`` and each method's variants on the validation view (``studies.sweep``) of
digits as in ``all-methods`` (forget sets 2, 6, 8 and 2+6, seeds 0-2) and prints every
variant's mean and worst gap to retraining on the validation split; the grid takes each
method's variant with the smallest mean gap (``bench/harness/builtin_grids.py`` cites it).

- SSD: with the official single-class batches, I_f / I_d is at most C / k (``methods/ssd.py``),
  so the paper's absolute alpha 10 selects nothing on 10 classes, and an absolute alpha that
  suits one forget class is above the ceiling of two: absolute alphas, and ``relative_alpha``
  fractions of the ceiling.
- Gradient ascent: lr x epochs around the former hand-picked 1e-3 x 7.
- Influence unlearning and Fisher forgetting: their one scale, around the former settings.
"""
from __future__ import annotations

import sys
from typing import Any

from bench.harness.builtin_grids import BUILTIN_GRIDS
from bench.harness.grid import Grid
from studies.sweep import run_study, validation_grid

GRID_NAME = "all-methods-rule"
SWEEPS: dict[str, list[dict[str, Any]]] = {
    "ssd": [*({"alpha": a} for a in (2.0, 3.0, 5.0)),
            *({"alpha": a, "relative_alpha": True} for a in (0.3, 0.5, 0.6, 0.7, 0.85))],
    "gradient_ascent": [{"lr": lr, "epochs": e} for lr in (5e-4, 1e-3, 2e-3) for e in (4, 7, 10)],
    "influence_unlearning": [{"alpha": a} for a in (0.03, 0.05, 0.1, 0.2)],
    "fisher_forgetting": [{"alpha": a} for a in (3e-7, 1e-6, 2e-6, 5e-6)],
}


def variant_name(method: str, params: dict[str, Any]) -> str:
    return method + "".join(f"_{'rel' if k == 'relative_alpha' else k}"
                            + ("" if v is True else f"{v:g}") for k, v in params.items())


def study_grid() -> Grid:
    variants = [{"name": variant_name(m, p), "method": m, "params": p}
                for m, sweep in SWEEPS.items() for p in sweep]
    return validation_grid(GRID_NAME, variants=variants, seeds=(0, 1, 2),
                           experiments=[BUILTIN_GRIDS["all-methods"]["experiments"][0]])


def main(argv: list[str] | None = None) -> int:
    return run_study(study_grid(), prog="python -m studies.all_methods_rule",
                     description=__doc__, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
