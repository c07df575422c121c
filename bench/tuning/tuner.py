"""``run_bench.py --grid G --tune N``: N trials per method and (dataset, architecture).

Protocol (README: Tuning):
- Every trial runs on tuning's validation view of the experiment (``Experiment.validation``):
  models train on the training split minus a per-class validation fraction, and "test"
  accuracies are validation accuracies; the test split is never read.
- Trials use the grid's first seed and all its forget sets; a trial's value is the declared
  objective (``bench.tuning.objective``) averaged over the forget sets.
- Each method's study is Optuna's TPE sampler, seeded with the same ``--tune-seed`` for every
  method; its first trial is the setting the grid would run (``space.start_point``). Trials are
  asked in fixed batches of ``TRIAL_BATCH``, so the sequence does not depend on ``--jobs``.
- A trial's cells are ordinary cells keyed by their configuration hash and appended to
  ``<results>/<grid>/tuning/trials.jsonl``. A rerun replays the seeded sampler and takes every
  known value from there: an interrupted tuning resumes, a finished one computes nothing.
"""
from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from bench.harness.cache import ModelCache
from bench.harness.cells import Cell, original_key
from bench.harness.config import RunConfig
from bench.harness.execute import experiment_contexts, run_cells, train_original
from bench.harness.grid import Experiment, Grid, MethodSpec
from bench.harness.parallel import spread
from bench.harness.store import append_record, read_records, repair_tail
from bench.harness.versions import code_version
from bench.tuning.objective import OBJECTIVES, Objective, trial_value
from bench.tuning.space import distributions, start_point
from bench.tuning.tuned_file import Sampler, TunedEntry, write_tuned
from methods import get_method

log = logging.getLogger(__name__)

# Share of each class's training samples held out for validation (at least one a class).
VALIDATION_FRACTION = 0.2
# Trials asked from each study before their values are told (constant liar meanwhile).
TRIAL_BATCH = 4
REFERENCE = "retrain"


@dataclass(frozen=True, kw_only=True)
class TuneSettings:
    trials: int
    objective: str = "retrain-gap"
    sampler_seed: int = 0

    @property
    def n_startup_trials(self) -> int:
        """Random trials before TPE models the results: half the budget, at most Optuna's 10."""
        return max(1, min(10, self.trials // 2))


def identity(cell: Cell) -> str:
    """What makes a trial cell's result: its configuration hash (settings, code, data, threads)
    with the architecture, forget set and seed, which the hash leaves to the cell's key (the
    trial's label is not part of it: a setting asked twice is computed once)."""
    return f"{cell.experiment.arch}/{cell.classes_text}/{cell.seed}/{cell.config_hash}"


def record_identity(record: dict[str, Any]) -> str:
    """``identity`` of the cell that made ``record``."""
    return (f"{record['arch']}/{record['forget_classes']}/{record['seed']}/"
            f"{record['config_hash']}")


class TrialStore:
    """Every trial cell's record (errors included: a setting that fails, fails again), by its
    ``identity``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(path)
        self.records = {record_identity(r): r for r in read_records(path)}
        self.computed = 0

    def add(self, record: dict[str, Any]) -> None:
        append_record(self.path, record)
        self.records[record_identity(record)] = record
        self.computed += 1


@dataclass(kw_only=True)
class Study:
    """One method's search on one (dataset, architecture)."""

    spec: MethodSpec
    base: dict[str, Any]           # the grid's resolved values
    space: dict[str, Any]
    study: optuna.Study
    asked: int = 0


def validation_experiment(exp: Experiment) -> Experiment:
    """The experiment tuning runs on: the test cap is meaningless there (no test split)."""
    return dataclasses.replace(exp, validation=VALIDATION_FRACTION, test_per_class=None)


def tuning_space(spec: MethodSpec) -> dict[str, Any]:
    """The method's declared space minus the names the variant sets (those define it)."""
    return {k: v for k, v in get_method(spec.method).search_space.items()
            if k not in spec.params}


def _new_study(spec: MethodSpec, base: dict[str, Any], settings: TuneSettings) -> Study | None:
    space = tuning_space(spec)
    if not space:
        return None
    with warnings.catch_warnings():  # constant_liar is marked experimental in some versions
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=settings.sampler_seed, constant_liar=True,
                                             n_startup_trials=settings.n_startup_trials)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    first = start_point(space, base)
    if first:
        study.enqueue_trial(first)
    return Study(spec=spec, base=base, space=space, study=study)


class ExperimentTuning:
    """The studies of one experiment, run in lockstep rounds so every round's cells (all
    methods, trials and forget sets) go through the parallel runner together."""

    def __init__(self, grid: Grid, exp: Experiment, *, cfg: RunConfig,
                 settings: TuneSettings, store: TrialStore) -> None:
        if exp.tune_trials is not None and exp.tune_trials < settings.trials:
            settings = dataclasses.replace(settings, trials=exp.tune_trials)
        self.view = validation_experiment(exp)
        self.cfg, self.settings, self.store = cfg, settings, store
        self.objective: Objective = OBJECTIVES[settings.objective]
        self.seed = grid.seeds[0]
        self.vgrid = Grid(name=f"{grid.name}.tuning", seeds=(self.seed,), methods=(),
                          experiments=(self.view,))
        self.context = experiment_contexts(self.vgrid, cfg)[0]
        specs = [spec for spec in grid.methods if exp.runs(spec.label)]
        self.studies = [s for spec in specs
                        if (s := _new_study(spec, exp.params[spec.label], settings))]
        self.skipped = [spec.label for spec in specs if not tuning_space(spec)]

    @property
    def where(self) -> str:
        return f"{self.view.dataset}/{self.view.arch}"

    def cell(self, *, label: str, method: str, params: dict[str, Any],
             classes: tuple[int, ...]) -> Cell:
        return Cell(experiment=self.view, forget_classes=classes, label=label, method=method,
                    seed=self.seed, params=params, context=self.context)

    def references(self) -> list[Cell | None]:
        if not self.objective.needs_retrain:
            return [None] * len(self.view.forget_classes)
        params = get_method(REFERENCE)().params()
        return [self.cell(label=REFERENCE, method=REFERENCE, params=params, classes=c)
                for c in self.view.forget_classes]

    def ask(self, study: Study) -> tuple[optuna.trial.Trial, list[Cell]]:
        trial = study.study.ask(distributions(study.space))
        study.asked += 1
        params = {**study.base, **trial.params}
        cells = [self.cell(label=f"{study.spec.label}.t{trial.number}", method=study.spec.method,
                           params=params, classes=c) for c in self.view.forget_classes]
        return trial, cells

    def run(self, cells: list[Cell]) -> None:
        """Compute the cells whose configuration has no record yet (each once)."""
        todo = {identity(c): c for c in cells if identity(c) not in self.store.records}
        if not todo:
            return
        first = next(iter(todo.values()))
        if not ModelCache(self.cfg.cache_dir).path(original_key(first)).exists():
            for which, seconds in spread(train_original, [(first,)], self.cfg):
                log.info("tuning: trained original %s (validation view) in %.1fs", which,
                         seconds)
        done = 0

        def on_record(record: dict[str, Any]) -> None:
            nonlocal done
            done += 1
            self.store.add(record)
            log.info("tuning %s: cell %d of %d this round (%s on %s%s, %.1fs)", self.where, done,
                     len(todo), record["method"], record["forget_classes"],
                     ", failed" if "error" in record else "", record.get("time_s", 0.0))

        run_cells(list(todo.values()), self.cfg, grid=self.vgrid, on_record=on_record)

    def tune(self) -> list[TunedEntry]:
        log.info("tuning %s: %d trials per method for %s", self.where, self.settings.trials,
                 ", ".join(s.spec.label for s in self.studies) or "no method")
        if self.skipped:
            log.info("tuning %s: nothing to tune for %s", self.where, ", ".join(self.skipped))
        references = self.references()
        while any(s.asked < self.settings.trials for s in self.studies):
            batch = {s.spec.label: [self.ask(s) for _ in range(
                min(TRIAL_BATCH, self.settings.trials - s.asked))] for s in self.studies}
            cells = [c for pairs in batch.values() for _, cs in pairs for c in cs]
            # The references are computed in the first round; later rounds find them stored.
            self.run([*(r for r in references if r is not None), *cells])
            reference_records = [self.store.records[identity(r)] if r else None
                                 for r in references]
            for study in self.studies:
                for trial, trial_cells in batch[study.spec.label]:
                    self.tell(study, trial, cells=trial_cells, references=reference_records)
        return [e for s in self.studies if (e := self.entry(s))]

    def tell(self, study: Study, trial: optuna.trial.Trial, *, cells: list[Cell],
             references: list[dict[str, Any] | None]) -> None:
        records = [self.store.records[identity(c)] for c in cells]
        value = trial_value(self.objective, records=records, references=references)
        if value is None:
            study.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            errors = [r["error"] for r in [*records, *(x for x in references if x)]
                      if "error" in r]
            log.warning("tuning %s %s: trial %d of %d failed: %s", self.where,
                        study.spec.label, trial.number + 1, self.settings.trials,
                        errors[0] if errors else "objective not finite")
            return
        study.study.tell(trial, value)
        best = study.study.best_trial
        log.info("tuning %s %s: trial %d of %d: %s %.2f (%s); best %.2f (trial %d)",
                 self.where, study.spec.label, trial.number + 1, self.settings.trials,
                 self.objective.name, value, _text(trial.params), best.value, best.number + 1)

    def entry(self, study: Study) -> TunedEntry | None:
        complete = study.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            log.error("tuning %s %s: every trial failed; no entry written", self.where,
                      study.spec.label)
            return None
        best = study.study.best_trial
        return TunedEntry(
            method=study.spec.label, registered_method=study.spec.method,
            dataset=self.view.dataset, arch=self.view.arch, params=best.params,
            objective=self.objective.name, objective_value=best.value,
            budget=self.settings.trials, trials_completed=len(complete),
            sampler=Sampler(name="TPESampler", seed=self.settings.sampler_seed,
                            n_startup_trials=self.settings.n_startup_trials,
                            batch=TRIAL_BATCH),
            seed=self.seed, forget_classes=["+".join(map(str, c))
                                            for c in self.view.forget_classes],
            validation_fraction=VALIDATION_FRACTION, split_seed=self.view.split_seed,
            code_version=code_version(get_method(study.spec.method)))


def _text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def tune_grid(grid: Grid, cfg: RunConfig, *, settings: TuneSettings) -> tuple[Path, int, int]:
    """Tune every method of every experiment; writes ``<results>/<grid>/tuned.yaml``.
    Returns (its path, cells computed, methods left without an entry). The caller holds the
    grid's lock."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = cfg.results_dir / grid.name
    store = TrialStore(folder / "tuning" / "trials.jsonl")
    entries: list[TunedEntry] = []
    missing = 0
    for exp in grid.experiments:
        tuning = ExperimentTuning(grid, exp, cfg=cfg, settings=settings, store=store)
        found = tuning.tune()
        entries += found
        missing += len(tuning.studies) - len(found)
    path = folder / "tuned.yaml"
    write_tuned(path, grid=grid.name, entries=entries)
    log.info("tuning: %d cells computed (trial records: %s)", store.computed, store.path)
    return path, store.computed, missing
