"""Cells and every key derived from them: record identity, configuration hash, model-cache keys.

Every key sees everything that changes a result: the experiment's settings, the method's
parameters and code version, a fingerprint of the loaded data, and the per-cell torch thread
count (float summation order depends on it, so models differ across thread counts).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.cache import content_key
from bench.harness.grid import Experiment, Grid, MethodSpec
from bench.harness.store import read_records, record_line, write_atomic
from bench.harness.versions import code_version, training_code_version
from bench.metrics.shadows import SHADOW_FIELD
from methods import get_method


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a cell's result depends on beyond the grid: the data it saw, its thread count."""

    data_fingerprint: str | None = None   # None: unknown (a dry run reads no data)
    threads: int = 1


@dataclass(frozen=True, kw_only=True)
class Cell:
    experiment: Experiment
    forget_classes: tuple[int, ...]
    label: str                   # a grid method label, or "original"
    method: str                  # the registered method ("original" for the initial model)
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    context: Context = field(default_factory=Context)
    # Record per-example scores for the shadow-model analysis (not part of any key: the same
    # model either way).
    shadow_scores: bool = False

    @property
    def classes_text(self) -> str:
        return "+".join(map(str, self.forget_classes))

    @property
    def key(self) -> str:
        e = self.experiment
        return f"{e.dataset}/{e.arch}/{self.classes_text}/{self.label}/{self.seed}"

    @property
    def code_version(self) -> str:
        if self.method == "original":
            return training_code_version()
        return code_version(get_method(self.method))

    def config_hash_for(self, data_fingerprint: str | None) -> str:
        e = self.experiment
        # arch is in the key; model_spec adds only what goes beyond it (starting weights).
        extra = {k: v for k, v in e.model_spec.items() if k != "arch"}
        return content_key({"train": e.train.as_dict(), **e.data_spec, **extra,
                            "method": self.method, "params": self.params,
                            "code_version": self.code_version,
                            "training_code_version": training_code_version(),
                            "data_fingerprint": data_fingerprint,
                            "threads": self.context.threads})

    @property
    def config_hash(self) -> str:
        return self.config_hash_for(self.context.data_fingerprint)

    def is_current(self, record: dict[str, Any]) -> bool:
        """Whether ``record`` was made for this cell by this configuration, code and data (when
        the data is unknown, any data the record names)."""
        fingerprint = self.context.data_fingerprint or record.get("data_fingerprint")
        return (record.get("cell") == self.key
                and record.get("config_hash") == self.config_hash_for(fingerprint))


def _specs_run(grid: Grid, exp: Experiment) -> list[MethodSpec]:
    return [spec for spec in grid.methods if exp.runs(spec.label)]


def grid_cells(grid: Grid, contexts: dict[int, Context] | None = None) -> list[Cell]:
    """Every cell of ``grid``; ``contexts`` maps an experiment's index to its context."""
    cells = []
    for index, exp in enumerate(grid.experiments):
        context = (contexts or {}).get(index, Context())
        specs = _specs_run(grid, exp)
        if not specs:
            continue  # narrowed to methods this experiment does not run: not even originals
        for classes in exp.forget_classes:
            for seed in exp.seeds(grid.seeds):
                scores = seed < (grid.shadows or 0)
                cells.append(Cell(experiment=exp, forget_classes=classes, label="original",
                                  method="original", seed=seed, context=context,
                                  shadow_scores=scores))
                for spec in specs:
                    cells.append(Cell(experiment=exp, forget_classes=classes, label=spec.label,
                                      method=spec.method, seed=seed,
                                      params=exp.params[spec.label], context=context,
                                      shadow_scores=scores))
    return cells


def runs_path(results_dir: Path, grid_name: str) -> Path:
    return results_dir / grid_name / "runs.jsonl"


def _cell_of_record(record: dict[str, Any], grid: Grid, contexts: dict[int, Context] | None
                    ) -> Cell | None:
    """The cell a record claims to be, rebuilt from it within the grid's experiment of the same
    dataset and architecture: for methods the grid does not list (``--methods``, plugins).
    None for a method the experiment runs: the grid's own cells judge it, and a record of a
    seed or forget set outside them (from before a max_seeds, say), judged by its own params,
    would bring an older configuration into a mean."""
    method = record.get("registered_method")
    try:
        get_method(method)
        classes = tuple(int(c) for c in str(record["forget_classes"]).split("+"))
        for index, exp in enumerate(grid.experiments):
            if (exp.dataset, exp.arch) == (record.get("dataset"), record.get("arch")):
                labels = {spec.label for spec in _specs_run(grid, exp)}
                if labels and record["method"] in labels | {"original"}:
                    return None
                return Cell(experiment=exp, forget_classes=classes, label=record["method"],
                            method=method, seed=int(record["seed"]),
                            params=dict(record.get("params") or {}),
                            context=(contexts or {}).get(index, Context()))
    except (LookupError, TypeError, ValueError):
        return None
    return None


def current_records(grid: Grid, records: list[dict[str, Any]],
                    contexts: dict[int, Context] | None = None
                    ) -> tuple[dict[str, dict[str, Any]], int]:
    """({cell key: its latest current record}, how many other records were skipped as stale:
    made by another configuration, other code or other data, by an unregistered method, or
    outside the grid's cells for a method the grid runs)."""
    by_key = {c.key: c for c in grid_cells(grid, contexts)}
    current: dict[str, dict[str, Any]] = {}
    stale = 0
    for record in records:
        cell = by_key.get(record["cell"]) or _cell_of_record(record, grid, contexts)
        if cell is not None and cell.is_current(record):
            stale += record["cell"] in current  # an older duplicate of the same cell
            current[record["cell"]] = record
        else:
            stale += 1
    return current, stale


def prune_stale(grid: Grid, path: Path, contexts: dict[int, Context] | None = None) -> int:
    """Rewrite the records file ``path`` with only the grid's current records (the latest of
    each cell, in their stored order), in one atomic step; returns how many were removed. The
    caller holds the grid's lock."""
    records = list(read_records(path))
    current, stale = current_records(grid, records, contexts)
    if stale:
        kept = [r for r in records if current.get(r["cell"]) is r]
        write_atomic(path, "".join(map(record_line, kept)))
    return stale


def pending_cells(grid: Grid, results_dir: Path, contexts: dict[int, Context] | None = None
                  ) -> tuple[list[Cell], list[Cell]]:
    """(all cells, cells without a record made under their current configuration, or whose
    record lacks the shadow scores the grid asks for)."""
    cells = grid_cells(grid, contexts)
    done, _ = current_records(grid, list(read_records(runs_path(results_dir, grid.name))),
                              contexts)
    return cells, [c for c in cells if c.key not in done
                   or (c.shadow_scores and SHADOW_FIELD not in done[c.key])]


def train_spec(cell: Cell) -> dict[str, Any]:
    """Everything that determines a model trained with the cell's experiment recipe."""
    exp = cell.experiment
    return {**exp.data_spec, **exp.model_spec, "train": exp.train.as_dict(), "seed": cell.seed,
            "training_code_version": training_code_version(),
            "data_fingerprint": cell.context.data_fingerprint, "threads": cell.context.threads}


def original_key(cell: Cell) -> str:
    """Cache key of the original model, shared by every cell of its experiment and seed."""
    return content_key({"kind": "original", **train_spec(cell)})


def unlearned_key(cell: Cell) -> str:
    """Cache key of a cell's unlearned model, for methods that declare ``cache_model``."""
    return content_key({"kind": cell.method, "params": cell.params,
                        "code_version": cell.code_version,
                        "forget_classes": cell.forget_classes, **train_spec(cell)})
