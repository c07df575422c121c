"""``tuned.yaml``: what ``run_bench.py --tune N`` chose, and how a grid's ``tuned:`` key uses it.

One entry per (method label, dataset, architecture): the chosen values, the objective and its
value, the budget, the sampler and its seed, the validation split and the method's code
version. A grid that points to the file takes an entry's values over its own ``method_params``
(those are the pre-tuning settings, and the tuner's first trial); a variant's own ``params``
(``{name: pbu_beta0, method: pbu, params: {beta: 0}}``) define the variant, so they are never
tuned and never replaced.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from bench.errors import BenchInputError
from bench.harness.store import write_atomic
from bench.harness.versions import code_version
from bench.harness.yaml_file import read_yaml
from methods import get_method

log = logging.getLogger(__name__)

OBJECTIVE_NAMES = ("retrain-gap", "forget-only")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Sampler(_Strict):
    name: Literal["TPESampler"]
    seed: NonNegativeInt
    n_startup_trials: PositiveInt
    batch: PositiveInt           # trials asked before their results are told


class TunedEntry(_Strict):
    method: str                  # the grid's label
    registered_method: str
    dataset: str
    arch: str
    params: dict[str, Any]       # the chosen values of the searched hyperparameters
    objective: Literal["retrain-gap", "forget-only"]
    objective_value: float
    budget: PositiveInt          # trials asked
    trials_completed: NonNegativeInt
    sampler: Sampler
    seed: NonNegativeInt         # the grid's first seed: the trials' cells ran with it
    forget_classes: list[str] = Field(min_length=1)
    validation_fraction: float = Field(gt=0, lt=1)
    split_seed: NonNegativeInt
    code_version: str


class TunedFile(_Strict):
    grid: str
    entries: list[TunedEntry]

    def lookup(self) -> dict[tuple[str, str, str], TunedEntry]:
        return {(e.method, e.dataset, e.arch): e for e in self.entries}


def read_tuned(path: str) -> Any:
    """The raw document of a tuned file (validated by the caller against ``TunedFile``)."""
    if not Path(path).is_file():
        raise BenchInputError(f"tuned file {path!r} does not exist; make one with "
                              "run_bench.py --grid GRID --tune N")
    return read_yaml(path, kind="tuned file")


def warn_if_stale(doc: TunedFile, path: str) -> None:
    """A warning per entry tuned for other code than the method's current code: its values
    are still used (the grid asked for them), but the search may now choose differently."""
    for e in doc.entries:
        now = code_version(get_method(e.registered_method))
        if now != e.code_version:
            log.warning("tuned file %s: %s on %s/%s was tuned for code version %s; the method's "
                        "code is now %s, so rerun --tune to refresh it", path, e.method,
                        e.dataset, e.arch, e.code_version, now)


def write_tuned(path: Path, *, grid: str, entries: list[TunedEntry]) -> None:
    """Write ``entries`` over those of an existing file at ``path`` (same method, dataset and
    architecture replaced, others kept), sorted so that a rerun writes identical bytes."""
    kept: dict[tuple[str, str, str], TunedEntry] = {}
    if path.exists():
        kept = TunedFile.model_validate(read_tuned(str(path))).lookup()
    kept.update(TunedFile(grid=grid, entries=entries).lookup())
    doc = TunedFile(grid=grid, entries=[kept[k] for k in sorted(kept)])
    header = ("# Written by run_bench.py --tune (README: Tuning). A grid uses it through the\n"
              "# key `tuned: PATH` or --tuned PATH: its values override the grid's\n"
              "# method_params.\n")
    write_atomic(path, header + yaml.safe_dump(doc.model_dump(mode="json"), sort_keys=False))


def resolve(*, grid: dict[str, Any], pinned: set[str], tuned: TunedEntry | None
            ) -> tuple[dict[str, Any], dict[str, str]]:
    """(the overrides to apply over the method's defaults, where each came from) for one
    label: ``grid`` holds the grid's values (a variant's params and the experiment's
    method_params), ``pinned`` the names a variant sets, which a tuned value never replaces."""
    chosen = {k: v for k, v in (tuned.params if tuned else {}).items() if k not in pinned}
    sources = {**dict.fromkeys(grid, "grid"), **dict.fromkeys(chosen, "tuned")}
    return {**grid, **chosen}, sources
