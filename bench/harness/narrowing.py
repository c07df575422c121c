"""The command line's narrowing of a grid (``--methods``, ``--seeds``, ``--classes``,
``--tuned``, ``--shadows``), applied to the raw mapping before the schema validates it."""
from __future__ import annotations

import copy
from typing import Any

from bench.harness.builtin_grids import PAPER_METHODS
from methods import list_methods


def narrow(raw: Any, *, methods: list[str] | None = None, seeds: list[int] | int | None = None,
           classes: list[list[int]] | None = None, tuned: str | None = None,
           untuned: bool = False, shadows: int | None = None) -> Any:
    """Apply ``--methods``/``--seeds``/``--classes``/``--tuned``/``--shadows`` to the raw grid,
    before it is parsed.

    A method outside the grid is added with its defaults; ``classes`` replaces every
    experiment's forget-class sets (``2,6`` -> [[2], [6]]; ``2+6`` -> [[2, 6]]); ``untuned``
    drops the grid's tuned file (``--tune`` starts from the grid's own settings).
    """
    if not isinstance(raw, dict):
        return raw  # the parser reports it
    raw = copy.deepcopy(raw)
    if methods is not None:
        entries = raw.get("methods", list(PAPER_METHODS))
        by_label = {(e if isinstance(e, str) else e.get("name")): e for e in entries
                    if isinstance(e, (str, dict))}
        raw["methods"] = [by_label.get(m, m) for m in methods]
        # Settings of the labels left out go with them (a registered method's stay: it may
        # be added back by name).
        dropped = set(by_label) - set(methods) - set(list_methods())
        for exp in raw.get("experiments") or []:
            if isinstance(exp, dict) and isinstance(exp.get("method_params"), dict):
                exp["method_params"] = {k: v for k, v in exp["method_params"].items()
                                        if k not in dropped}
            if isinstance(exp, dict) and isinstance(exp.get("methods"), list):
                # An experiment that runs some of the grid's methods keeps those asked for;
                # methods new to the grid join every experiment.
                exp["methods"] = [m for m in methods
                                  if m in exp["methods"] or m not in by_label]
    if seeds is not None:
        raw["seeds"] = seeds
    if tuned is not None:
        raw["tuned"] = tuned
    if untuned:
        raw.pop("tuned", None)
    if shadows is not None:
        raw["shadows"] = shadows
    if classes is not None and isinstance(raw.get("experiments"), list):
        raw["experiments"] = [{**e, "forget_classes": classes} if isinstance(e, dict) else e
                              for e in raw["experiments"]]
    return raw
