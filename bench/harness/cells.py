"""Cells and every key derived from them: record identity, configuration hash, model-cache keys."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.cache import content_key
from bench.harness.grid import Experiment, Grid
from bench.harness.store import read_records
from methods.training import RECIPE_VERSION


@dataclass(frozen=True, kw_only=True)
class Cell:
    experiment: Experiment
    forget_classes: tuple[int, ...]
    label: str                   # a grid method label, or "original"
    method: str                  # the registered method ("original" for the initial model)
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def classes_text(self) -> str:
        return "+".join(map(str, self.forget_classes))

    @property
    def key(self) -> str:
        e = self.experiment
        return f"{e.dataset}/{e.arch}/{self.classes_text}/{self.label}/{self.seed}"

    @property
    def config_hash(self) -> str:
        e = self.experiment
        # arch is in the key; model_spec adds only what goes beyond it (starting weights).
        extra = {k: v for k, v in e.model_spec.items() if k != "arch"}
        return content_key({"train": e.train.as_dict(), **e.data_spec, **extra,
                            "method": self.method, "params": self.params,
                            "recipe_version": RECIPE_VERSION})


def grid_cells(grid: Grid) -> list[Cell]:
    cells = []
    for exp in grid.experiments:
        for classes in exp.forget_classes:
            for seed in grid.seeds:
                cells.append(Cell(experiment=exp, forget_classes=classes, label="original",
                                  method="original", seed=seed))
                for spec in grid.methods:
                    cells.append(Cell(experiment=exp, forget_classes=classes, label=spec.label,
                                      method=spec.method, seed=seed,
                                      params=exp.params[spec.label]))
    return cells


def runs_path(results_dir: Path, grid_name: str) -> Path:
    return results_dir / grid_name / "runs.jsonl"


def pending_cells(grid: Grid, results_dir: Path) -> tuple[list[Cell], list[Cell]]:
    """(all cells, cells without a record made under their current configuration)."""
    done = {(r["cell"], r["config_hash"]) for r in read_records(runs_path(results_dir, grid.name))}
    cells = grid_cells(grid)
    return cells, [c for c in cells if (c.key, c.config_hash) not in done]


def train_spec(exp: Experiment, seed: int) -> dict[str, Any]:
    """Everything that determines a model trained with the experiment's recipe."""
    return {**exp.data_spec, **exp.model_spec,
            "train": exp.train.as_dict(), "seed": seed, "recipe_version": RECIPE_VERSION}


def original_spec(exp: Experiment, seed: int) -> dict[str, Any]:
    return {"kind": "original", **train_spec(exp, seed)}


def original_key(exp: Experiment, seed: int) -> str:
    """Cache key of the original model, shared by every cell of ``exp`` and ``seed``."""
    return content_key(original_spec(exp, seed))


def unlearned_key(cell: Cell) -> str:
    """Cache key of a cell's unlearned model, for methods that declare ``cache_model``."""
    return content_key({"kind": cell.method, "params": cell.params,
                        "forget_classes": cell.forget_classes,
                        **train_spec(cell.experiment, cell.seed)})
