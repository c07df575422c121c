"""Grids are data: datasets x architectures x forget-class sets x methods x seeds.

A grid is read once: the raw mapping (a built-in grid or a YAML file, narrowed by the command
line) is validated by a pydantic schema that forbids unknown keys, then checked against the
registries (datasets, architectures, methods and their declared fields) in the same pass.
Every problem is one ``BenchInputError`` naming the key path, the bad value and what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      NonNegativeInt, PositiveInt, ValidationError, create_model)

from bench.data import dataset_info
from bench.errors import BenchInputError
from bench.harness.builtin_grids import BUILTIN_GRIDS, PAPER_METHODS
from bench.harness.narrowing import narrow
from bench.harness.yaml_file import read_yaml
from bench.metrics.shadows import shadow_count_problem
from bench.models import check_arch, check_pretrained
from bench.tuning import tuned_file
from methods import RegistryError, get_method, list_methods
from methods.training import TrainRecipe

# (label, dataset, arch) -> the grid's tuned-file entry
_TunedEntries = dict[tuple[str, str, str], tuned_file.TunedEntry]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"


def _unique(values: list) -> list:
    seen: list = []
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} appears twice")
        seen.append(value)
    return values


def _forget_set(value: int | list[int]) -> tuple[int, ...]:
    classes = [value] if isinstance(value, int) else value
    if not classes:
        raise ValueError("a forget-class set must not be empty")
    return tuple(sorted(_unique(classes)))


def _name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError("must be 1-64 letters, digits, '_', '.', '+' or '-', starting with a "
                         "letter or digit (it names a folder and a table column)")
    return value


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # YAML's true/yes: never a count, a seed or a rate
        raise ValueError("expected a number, not a boolean")  # noqa: TRY004 - pydantic wants it
    return value


NoBool = BeforeValidator(_not_bool)
Name = Annotated[str, AfterValidator(_name)]
Index = Annotated[NonNegativeInt, NoBool]
Count = Annotated[PositiveInt, NoBool]
ForgetSet = Annotated[Index | list[Index], AfterValidator(_forget_set)]


def _shadow_count(value: int) -> int:
    problem = shadow_count_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=False)


class MethodEntry(_Strict):
    name: Name
    method: Name | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class ExperimentSchema(_Strict):
    dataset: str
    arch: str
    forget_classes: Annotated[list[ForgetSet], Field(min_length=1), AfterValidator(_unique)]
    train: dict[str, Any] = Field(default_factory=dict)   # TrainRecipe's fields
    method_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    split_seed: Index = 0
    # Stratified caps on each split, drawn by split_seed, to size a grid for small machines.
    train_per_class: Count | None = None
    test_per_class: Count | None = None
    pretrained: Literal["imagenet"] | None = None   # start from torchvision's weights
    # To size a costly architecture for a small machine: only these of the grid's methods,
    # its first max_seeds seeds and tune_trials --tune trials a method (the same for all).
    methods: Annotated[list[Name], AfterValidator(_unique)] | None = None
    max_seeds: Count | None = None
    tune_trials: Count | None = None


class GridSchema(_Strict):
    name: Name
    seeds: Count | Annotated[list[Index], Field(min_length=1),
                             AfterValidator(_unique)] = Field(default_factory=lambda: [0])
    methods: Annotated[list[Name | MethodEntry], Field(min_length=1)] = Field(
        default_factory=lambda: list(PAPER_METHODS))
    experiments: Annotated[list[ExperimentSchema], Field(min_length=1)]
    curves: Annotated[bool, Field(strict=True)] = False
    tuned: str | None = None    # a tuned.yaml whose values override method_params
    shadows: Annotated[Count, AfterValidator(_shadow_count)] | None = None


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """A column of the table: a registered method under a label, with parameter overrides."""

    label: str
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Experiment:
    dataset: str
    arch: str
    forget_classes: tuple[tuple[int, ...], ...]
    train: TrainRecipe
    params: dict[str, dict[str, Any]]   # method label -> resolved hyperparameters
    # method label -> {hyperparameter: "default" | "grid" | "tuned"}
    param_sources: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    split_seed: int = 0
    train_per_class: int | None = None
    test_per_class: int | None = None
    pretrained: str | None = None
    # Tuning's view: this fraction of each class's training samples is the evaluation split
    # and the test split is never read (bench.data.validation_view); None for every grid cell.
    validation: float | None = None
    methods: tuple[str, ...] | None = None   # the grid's labels run here; None: all
    max_seeds: int | None = None   # only the first max_seeds of the grid's seeds; None: all
    tune_trials: int | None = None   # a cap on --tune's trials per method; None: none

    def runs(self, label: str) -> bool:
        return self.methods is None or label in self.methods

    def seeds(self, grid_seeds: tuple[int, ...]) -> tuple[int, ...]:
        return grid_seeds[:self.max_seeds]

    @property
    def data_spec(self) -> dict[str, Any]:
        """Everything that determines the images a model sees (part of every cache key)."""
        spec: dict[str, Any] = {"dataset": self.dataset, "split_seed": self.split_seed}
        for key in ("train_per_class", "test_per_class", "validation"):
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        return spec

    @property
    def model_spec(self) -> dict[str, Any]:
        """The architecture and its starting weights (part of every cache key)."""
        return {"arch": self.arch, **({"pretrained": self.pretrained} if self.pretrained else {})}


@dataclass(frozen=True, kw_only=True)
class Grid:
    name: str
    seeds: tuple[int, ...]
    methods: tuple[MethodSpec, ...]
    experiments: tuple[Experiment, ...]
    curves: bool = False
    tuned: str | None = None
    # Shadow-model privacy over seeds 0..shadows-1 (bench/metrics/shadows.py); None: off.
    shadows: int | None = None


def _path_text(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not str(part)[:1].isupper() and not str(part).startswith(
                ("function-", "union[", "int", "list[", "str", "constrained")):  # union branches
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _validation_error(exc: ValidationError, where: str, prefix: str = "") -> BenchInputError:
    """The first problem, as one line: where, the key path, the bad value, what is allowed."""
    # Of a union's alternatives, report the one that got furthest: a value error or the deepest
    # key path beats "wrong type" from an alternative that was never meant.
    err = min(exc.errors(include_url=False),
              key=lambda e: (e["type"].endswith("_type"), -len(e["loc"])))
    path = _path_text((*((prefix,) if prefix else ()), *err["loc"]))
    message = err["msg"].removeprefix("Value error, ").split(" or an instance of ")[0]
    message = message.split(" or instance of ")[0]
    if err["type"] == "extra_forbidden" or err["type"] == "unexpected_keyword_argument":
        message = "unknown key"
    return BenchInputError(f"{where}: {path} = {_short(err['input'])}: {message}")


def _invalid(where: str, path: str, value: Any, message: str) -> BenchInputError:
    return BenchInputError(f"{where}: {path} = {_short(value)}: {message}")


def _strict_numbers(hint: Any) -> Any:
    """``hint`` with booleans refused where it asks for an int or a float."""
    if hint is bool:
        return Annotated[bool, Field(strict=True)]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    parts = typing.get_args(hint) if union else (hint,)
    return Annotated[hint, NoBool] if int in parts or float in parts else hint


@functools.cache
def _params_schema(cls: type) -> type[BaseModel]:
    """A strict model of a class's keyword parameters, from its constructor's signature and
    type hints (a method's dataclass fields, a plugin's own ``__init__``, ``TrainRecipe``)."""
    try:
        hints = typing.get_type_hints(cls if dataclasses.is_dataclass(cls) else cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable hints: accept any value of that name
        hints = {}
    fields: dict[str, Any] = {
        name: (_strict_numbers(hints.get(name, Any)), p.default)
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty}
    return create_model(f"{cls.__name__}Params", __config__=_Strict.model_config, **fields)


def _construct(cls: type, overrides: Any, *, where: str, path: str) -> Any:
    """Validate ``overrides`` against ``cls``'s declared parameters, then construct it (its
    own checks run there); every problem is one ``BenchInputError``."""
    try:
        values = _params_schema(cls).model_validate(overrides)
    except ValidationError as exc:
        raise _validation_error(exc, where, path) from None
    try:
        return cls(**dict(values))
    except (TypeError, ValueError) as exc:
        raise _invalid(where, path, overrides, str(exc)) from None


def _method_params(method: str, overrides: Any, *, where: str, path: str) -> dict[str, Any]:
    """The method's full parameters, ``overrides`` validated over its defaults."""
    return _construct(get_method(method), overrides, where=where, path=path).params()


def _resolved(spec: MethodSpec, *, grid_params: dict[str, Any],
              tuned: tuned_file.TunedEntry | None, where: str, path: str
              ) -> tuple[dict[str, Any], dict[str, str]]:
    """A label's full hyperparameters and each one's source (default < grid < tuned; a
    variant's own params are never replaced)."""
    if tuned is not None and tuned.registered_method != spec.method:
        raise _invalid(where, path, tuned.registered_method,
                       f"the tuned file's entry for {spec.label!r} was made for method "
                       f"{tuned.registered_method!r}, but this grid's {spec.label!r} is "
                       f"method {spec.method!r}")
    # The grid's own values must be valid even where a tuned value replaces them.
    _method_params(spec.method, grid_params, where=where, path=path)
    overrides, sources = tuned_file.resolve(grid=grid_params, pinned=set(spec.params),
                                            tuned=tuned)
    params = _method_params(spec.method, overrides, where=where, path=path)
    return params, {name: sources.get(name, "default") for name in params}


def _experiment(raw: ExperimentSchema, index: int, methods: tuple[MethodSpec, ...], *,
                where: str, tuned: _TunedEntries) -> Experiment:
    path = f"experiments[{index}]"
    try:
        info = dataset_info(raw.dataset)
        check_arch(raw.arch)
        check_pretrained(raw.arch, raw.pretrained)
    except BenchInputError as exc:
        raise BenchInputError(f"{where}: {path}: {exc}") from None
    for i, classes in enumerate(raw.forget_classes):
        bad = [c for c in classes if c >= info.num_classes]
        if bad:
            raise _invalid(where, f"{path}.forget_classes[{i}]", bad[0],
                           f"outside dataset {info.name!r}'s classes 0..{info.num_classes - 1}")
        if len(classes) >= info.num_classes:
            raise _invalid(where, f"{path}.forget_classes[{i}]", list(classes),
                           "leaves no class to retain")
    labels = {m.label for m in methods}
    for i, label in enumerate(raw.methods or []):
        if label not in labels:
            raise _invalid(where, f"{path}.methods[{i}]", label,
                           f"not a method of this grid; methods: {', '.join(sorted(labels))}")
    for label, overrides in raw.method_params.items():
        if label in labels:
            continue
        if label not in list_methods():
            raise _invalid(where, f"{path}.method_params", label,
                           f"not a method of this grid; methods: {', '.join(sorted(labels))}")
        # Settings for a registered method the grid does not run (``--methods`` may add it).
        _method_params(label, overrides, where=where,
                       path=f"{path}.method_params.{label}")
    resolved = {m.label: _resolved(m, grid_params={**m.params,
                                                   **raw.method_params.get(m.label, {})},
                                   tuned=tuned.get((m.label, info.name, raw.arch)),
                                   where=where, path=f"{path}.method_params.{m.label}")
                for m in methods}
    train = _construct(TrainRecipe, raw.train, where=where, path=f"{path}.train")
    return Experiment(dataset=info.name, arch=raw.arch, forget_classes=tuple(raw.forget_classes),
                      train=train, params={k: v[0] for k, v in resolved.items()},
                      param_sources={k: v[1] for k, v in resolved.items()},
                      split_seed=raw.split_seed,
                      train_per_class=raw.train_per_class, test_per_class=raw.test_per_class,
                      pretrained=raw.pretrained,
                      methods=None if raw.methods is None else tuple(raw.methods),
                      max_seeds=raw.max_seeds, tune_trials=raw.tune_trials)


def _method_spec(entry: str | MethodEntry, index: int, *, where: str) -> MethodSpec:
    if isinstance(entry, str):
        entry = MethodEntry(name=entry)
    method = entry.method or entry.name
    try:
        get_method(method)
    except RegistryError as exc:
        raise BenchInputError(f"{where}: methods[{index}]: {exc}") from None
    _method_params(method, entry.params, where=where,
                   path=f"methods[{index}].params")
    return MethodSpec(label=entry.name, method=method, params=dict(entry.params))


def _tuned_entries(path: str | None, *, where: str) -> _TunedEntries:
    """(label, dataset, arch) -> entry of the grid's tuned file; none without one."""
    if path is None:
        return {}
    try:
        doc = tuned_file.TunedFile.model_validate(tuned_file.read_tuned(path))
    except BenchInputError as exc:
        raise BenchInputError(f"{where}: tuned = {path!r}: {exc}") from None
    except ValidationError as exc:
        raise _validation_error(exc, f"{where}: tuned file {path!r}") from None
    for i, entry in enumerate(doc.entries):  # values the method would refuse: the file's fault
        try:
            get_method(entry.registered_method)
        except RegistryError as exc:
            raise BenchInputError(f"{where}: tuned file {path!r}: entries[{i}]: {exc}") from None
        _method_params(entry.registered_method, entry.params, path=f"entries[{i}].params",
                       where=f"{where}: tuned file {path!r}")
    tuned_file.warn_if_stale(doc, path)
    return doc.lookup()


def parse_grid(raw: Any, *, where: str = "grid") -> Grid:
    """Validate a grid given as data (``where`` names its source in error messages)."""
    try:
        schema = GridSchema.model_validate(raw)
    except ValidationError as exc:
        raise _validation_error(exc, where) from None
    methods = tuple(_method_spec(m, i, where=where) for i, m in enumerate(schema.methods))
    labels = [m.label for m in methods]
    for i, label in enumerate(labels):
        if label == "original" or labels.index(label) != i:
            raise _invalid(where, f"methods[{i}]", label,
                           "method labels must be unique and not 'original'")
    seeds = tuple(range(schema.seeds)) if isinstance(schema.seeds, int) else tuple(schema.seeds)
    if schema.shadows:
        # The shadow models are the grid's own cells at seeds 0..K-1, retrained ones included.
        seeds = tuple(sorted(set(seeds) | set(range(schema.shadows))))
        for i in (i for i, e in enumerate(schema.experiments) if e.max_seeds is not None):
            raise _invalid(where, f"experiments[{i}].max_seeds", schema.experiments[i].max_seeds,
                           "cannot be combined with shadows (they need seeds 0..K-1 everywhere)")
        if "retrain" not in labels:
            methods += (MethodSpec(label="retrain", method="retrain", params={}),)
    tuned = _tuned_entries(schema.tuned, where=where)
    return Grid(name=schema.name, seeds=seeds, methods=methods, curves=schema.curves,
                tuned=schema.tuned, shadows=schema.shadows,
                experiments=tuple(_experiment(e, i, methods, where=where, tuned=tuned)
                                  for i, e in enumerate(schema.experiments)))


def load_raw_grid(name_or_path: str) -> tuple[dict[str, Any], str]:
    """(the raw mapping, where it came from): a built-in grid by name, or a user's YAML file."""
    if name_or_path in BUILTIN_GRIDS:
        return copy.deepcopy(BUILTIN_GRIDS[name_or_path]), f"built-in grid {name_or_path!r}"
    if not name_or_path.endswith((".yaml", ".yml")):
        raise BenchInputError(f"unknown grid {name_or_path!r}; built-in grids: "
                              f"{', '.join(sorted(BUILTIN_GRIDS))}, or a .yaml/.yml file")
    return read_yaml(name_or_path), f"grid file {name_or_path!r}"


def load_grid(name_or_path: str, **narrowing: Any) -> Grid:
    raw, where = load_raw_grid(name_or_path)
    return parse_grid(narrow(raw, **narrowing), where=where)
