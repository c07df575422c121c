"""Grids are data: datasets x architectures x forget-class sets x methods x seeds."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.builtin_grids import BUILTIN_GRIDS, PAPER_METHODS
from bench.data import dataset_info
from bench.errors import BenchInputError
from bench.models import check_arch, check_pretrained
from bench.training import TrainRecipe
from methods import PluginError, get_method


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """A column of the table: a registered method under a label, with parameter overrides."""

    label: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Experiment:
    dataset: str
    arch: str
    forget_classes: tuple[tuple[int, ...], ...]
    train: TrainRecipe
    method_params: dict[str, dict[str, Any]]
    split_seed: int = 0
    # Stratified caps on each split, drawn by split_seed, to size a grid for small machines.
    train_per_class: int | None = None
    test_per_class: int | None = None
    pretrained: str | None = None    # "imagenet": start from torchvision's weights

    @property
    def data_spec(self) -> dict[str, Any]:
        """Everything that determines the images a model sees (part of every cache key)."""
        spec: dict[str, Any] = {"dataset": self.dataset, "split_seed": self.split_seed}
        for key in SUBSAMPLE_KEYS:
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        return spec

    @property
    def model_spec(self) -> dict[str, Any]:
        """The architecture and its starting weights (part of every cache key)."""
        return {"arch": self.arch, **({"pretrained": self.pretrained} if self.pretrained else {})}

    def as_raw(self) -> dict[str, Any]:
        """The grid entry this experiment was parsed from (for re-parsing with changes)."""
        return {**self.data_spec, **self.model_spec, "forget_classes": list(self.forget_classes),
                "train": self.train.as_dict(), "method_params": self.method_params}


SUBSAMPLE_KEYS = ("train_per_class", "test_per_class")


@dataclass(frozen=True, kw_only=True)
class Grid:
    name: str
    seeds: tuple[int, ...]
    methods: tuple[MethodSpec, ...]
    experiments: tuple[Experiment, ...]
    curves: bool = False

    def method(self, label: str) -> MethodSpec:
        return next(m for m in self.methods if m.label == label)


def _int_list(value: Any, what: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if (isinstance(value, list) and value
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return value
    raise BenchInputError(f"{what} must be an integer or a non-empty list of integers, got {value!r}")


def _method_spec(entry: Any) -> MethodSpec:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise BenchInputError(f"method entry {entry!r} must be a name or "
                              "{name: LABEL, method: REGISTERED, params: {...}}")
    spec = MethodSpec(label=entry["name"], method=entry.get("method", entry["name"]),
                      params=dict(entry.get("params") or {}))
    _resolve(spec, {})
    return spec


def _resolve(spec: MethodSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    try:
        cls = get_method(spec.method)
        return cls.resolve_params({**spec.params, **overrides})
    except (PluginError, ValueError) as exc:
        raise BenchInputError(str(exc)) from None


def _experiment(raw: Any, index: int) -> Experiment:
    if not isinstance(raw, dict):
        raise BenchInputError(f"experiment {index} must be a mapping, got {raw!r}")
    known = {"dataset", "arch", "forget_classes", "train", "method_params", "split_seed",
             "pretrained", *SUBSAMPLE_KEYS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BenchInputError(f"experiment {index} has unknown key(s) {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(known))}")
    for key in ("dataset", "arch", "forget_classes"):
        if key not in raw:
            raise BenchInputError(f"experiment {index} lacks {key!r}")
    info = dataset_info(str(raw["dataset"]))
    check_arch(str(raw["arch"]))
    check_pretrained(str(raw["arch"]), raw.get("pretrained"))
    sets = raw["forget_classes"]
    if not isinstance(sets, list) or not sets:
        raise BenchInputError(f"forget_classes of experiment {index} must be a non-empty list")
    forget = tuple(tuple(sorted(set(_int_list(s, "forget_classes entry")))) for s in sets)
    for classes in forget:
        bad = [c for c in classes if not 0 <= c < info.num_classes]
        if bad:
            raise BenchInputError(f"forget class {bad[0]} is outside dataset {info.name!r}'s "
                                  f"classes 0..{info.num_classes - 1}")
        if len(classes) >= info.num_classes:
            raise BenchInputError(f"forget classes {list(classes)} leave no class to retain")
    method_params = raw.get("method_params") or {}
    if not isinstance(method_params, dict):
        raise BenchInputError(f"method_params of experiment {index} must be a mapping")
    caps = {}
    for key in SUBSAMPLE_KEYS:
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise BenchInputError(f"{key} of experiment {index} must be a positive integer "
                                  f"or absent, got {value!r}")
        caps[key] = value
    return Experiment(dataset=info.name, arch=str(raw["arch"]), forget_classes=forget,
                      train=TrainRecipe.from_dict(dict(raw.get("train") or {})),
                      method_params={str(k): dict(v or {}) for k, v in method_params.items()},
                      split_seed=int(raw.get("split_seed", 0)),
                      pretrained=raw.get("pretrained"), **caps)


def parse_grid(raw: Any) -> Grid:
    """Validate a grid given as data; every problem is a one-line ``BenchInputError``."""
    if not isinstance(raw, dict):
        raise BenchInputError(f"a grid must be a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise BenchInputError(f"grid name {name!r} must be a non-empty folder name")
    seeds = raw.get("seeds", [0])
    seeds = list(range(seeds)) if isinstance(seeds, int) and seeds > 0 else _int_list(seeds, "seeds")
    methods = tuple(_method_spec(m) for m in raw.get("methods", PAPER_METHODS))
    labels = [m.label for m in methods]
    if "original" in labels or len(set(labels)) != len(labels):
        raise BenchInputError(f"method labels {labels} must be unique and not 'original'")
    experiments = raw.get("experiments")
    if not isinstance(experiments, list) or not experiments:
        raise BenchInputError("a grid needs a non-empty 'experiments' list")
    grid = Grid(name=name, seeds=tuple(seeds), methods=methods, curves=bool(raw.get("curves")),
                experiments=tuple(_experiment(e, i) for i, e in enumerate(experiments)))
    for exp in grid.experiments:
        for label in exp.method_params:
            if label not in labels:
                continue  # overrides for methods this grid does not run are harmless
            resolve_params(grid, exp, label)
    return grid


def resolve_params(grid: Grid, exp: Experiment, label: str) -> dict[str, Any]:
    """A method's full hyperparameters for one experiment: defaults < grid entry < overrides."""
    spec = grid.method(label)
    return _resolve(spec, exp.method_params.get(label, {}))


def load_grid(name_or_path: str) -> Grid:
    """A built-in grid by name, or a user's YAML file."""
    if name_or_path in BUILTIN_GRIDS:
        return parse_grid(copy.deepcopy(BUILTIN_GRIDS[name_or_path]))
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        raise BenchInputError(f"unknown grid {name_or_path!r}; built-in grids: "
                              f"{', '.join(sorted(BUILTIN_GRIDS))}, or a .yaml/.yml file")
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BenchInputError(f"cannot read grid file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise BenchInputError(f"grid file {str(path)!r} is not UTF-8 text: {exc.reason} "
                              f"at byte {exc.start}") from None
    except yaml.YAMLError as exc:
        detail = str(exc).replace("\n", " ")
        raise BenchInputError(f"grid file {str(path)!r} is not valid YAML: {detail}") from None
    return parse_grid(raw)


def narrow(grid: Grid, *, methods: list[str] | None = None, seeds: list[int] | None = None,
           classes: list[list[int]] | None = None) -> Grid:
    """Apply ``--methods``/``--seeds``/``--classes``; a method outside the grid is added plainly.

    ``classes`` replaces every experiment's forget-class sets (``2,6`` -> [[2], [6]];
    ``2+6`` -> [[2, 6]]) and is validated against each dataset.
    """
    specs = grid.methods
    if methods is not None:
        known = {m.label: m for m in grid.methods}
        specs = tuple(known.get(m) or _method_spec(m) for m in methods)
    experiments = grid.experiments
    if classes is not None:
        experiments = tuple(
            _experiment({**e.as_raw(), "forget_classes": classes}, i)
            for i, e in enumerate(experiments))
    return Grid(name=grid.name, seeds=tuple(seeds) if seeds is not None else grid.seeds,
                methods=specs, experiments=experiments, curves=grid.curves)
