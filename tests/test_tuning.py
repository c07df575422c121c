"""Tuning (README: Tuning): search spaces, the validation view, ``--tune N`` end to end on a
tiny grid that cannot read its test split, resuming, and the ``tuned:`` grid key."""
from __future__ import annotations

import dataclasses
import json
import textwrap

import numpy as np
import pytest
import torch
import yaml
from helpers import REPO, assert_clean_bad_input, run_main

from bench.data.loaders import validation_view
from bench.errors import BenchInputError
from bench.harness.grid import parse_grid
from methods import PluginError, UnlearningMethod, register_method
from methods.search import IntRange, LogUniform, Uniform

# The tuned file does not exist: --tune starts from the grid's own settings and ignores it.
TUNE_GRID = """\
name: tune
seeds: [0]
methods: [finetune, pbu]
tuned: not-made-yet.yaml
experiments:
  - dataset: digits-notest
    arch: smallcnn
    forget_classes: [[2], [6]]
    train: {epochs: 3}
    method_params: {finetune: {epochs: 1, lr: 0.003}}
"""


# ---------------------------------------------------------------- a test split that bites


class SplitReadError(Exception):
    """Raised (and logged in ``READS``) by any use of the poisoned test split."""


READS: list[str] = []


class Poisoned:
    """Stands in for the test split's dataset and labels: every use is recorded and raises."""

    def _bite(self, what: str):
        READS.append(what)
        raise SplitReadError(f"test split read: {what}")

    def __len__(self):
        return self._bite("len")

    def __getitem__(self, index):
        return self._bite(f"item {index!r}")

    def __iter__(self):
        return self._bite("iter")

    def __array__(self, *args, **kwargs):
        return self._bite("array")

    def __getattr__(self, name):
        return self._bite(f"attribute {name}")


@pytest.fixture
def poisoned_digits():
    """Dataset ``digits-notest``: digits whose test split raises on any access."""
    from bench.data import DATASETS, load_dataset
    from bench.data.registry import register_dataset
    from bench.harness.execute import cached_dataset

    def load(*, root=None, download=False, split_seed=0):
        data = load_dataset("digits", root=root, download=download, split_seed=split_seed)
        return dataclasses.replace(data, test=Poisoned(), test_targets=Poisoned())

    saved = DATASETS.snapshot()
    register_dataset("digits-notest", num_classes=10, in_channels=1, image_size=8)(load)
    cached_dataset.cache_clear()
    READS.clear()
    yield
    DATASETS.restore(saved)
    cached_dataset.cache_clear()


def test_the_poisoned_test_split_bites_an_ordinary_run(poisoned_digits):
    from bench.harness.execute import cached_dataset

    with pytest.raises(SplitReadError):
        cached_dataset("digits-notest", None, False, 0)
    assert READS


def _tune(tmp_path, capsys, monkeypatch, *extra: str) -> tuple[int, str]:
    from bench import cli

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = cli.main(["--grid", "tune.yaml", "--tune", "2", "--jobs", "1", "--results-dir",
                     "results", "--plots-dir", "plots", *extra])
    return code, capsys.readouterr().out


def test_tune_never_reads_test_data_and_resumes(poisoned_digits, tmp_path, capsys, monkeypatch):
    (tmp_path / "tune.yaml").write_text(TUNE_GRID)
    code, out = _tune(tmp_path, capsys, monkeypatch)
    assert code == 0, out
    assert READS == []
    tuned_path = tmp_path / "results" / "tune" / "tuned.yaml"
    doc = yaml.safe_load(tuned_path.read_text())
    entries = {e["method"]: e for e in doc["entries"]}
    assert set(entries) == {"finetune", "pbu"}
    for entry in entries.values():
        assert entry["budget"] == 2 and entry["trials_completed"] == 2
        assert entry["sampler"]["seed"] == 0 and entry["objective"] == "retrain-gap"
        assert entry["validation_fraction"] == 0.2 and entry["code_version"]
        assert np.isfinite(entry["objective_value"])
    # The first trial is the grid's own setting.
    trials = tmp_path / "results" / "tune" / "tuning" / "trials.jsonl"
    records = [json.loads(line) for line in trials.read_text().splitlines()]
    # Per forget set: retraining and 2 trials x 2 methods.
    assert sorted(r["forget_classes"] for r in records) == ["2"] * 5 + ["6"] * 5
    assert [r["forget_classes"] for r in records
            if r["params"] == {"epochs": 1, "lr": 0.003, "optimizer": "adam"}] == ["2", "6"]
    assert all("error" not in r and "forget_agreement" in r for r in records)
    assert all(r["validation"] == 0.2 for r in records)

    # A second identical call computes nothing and writes the same file.
    first = tuned_path.read_bytes()
    code, out = _tune(tmp_path, capsys, monkeypatch)
    assert code == 0 and "(0 cells computed)" in out
    assert trials.read_text().count("\n") == 10 and tuned_path.read_bytes() == first

    # Interrupted after nine of the ten cells: the rerun computes the missing one only.
    trials.write_text("".join(line + "\n" for line in trials.read_text().splitlines()[:9]))
    code, out = _tune(tmp_path, capsys, monkeypatch)
    assert code == 0 and "(1 cells computed)" in out
    assert tuned_path.read_bytes() == first
    assert READS == []


def test_forget_only_objective_needs_no_retraining(poisoned_digits, tmp_path, capsys,
                                                    monkeypatch):
    # The experiment caps the budget: 1 trial a method although --tune asks for 2.
    capped = TUNE_GRID.replace("train: {epochs: 3}", "train: {epochs: 3}\n    tune_trials: 1")
    (tmp_path / "tune.yaml").write_text(capped)
    code, out = _tune(tmp_path, capsys, monkeypatch, "--methods", "pbu", "--tune-objective",
                      "forget-only")
    assert code == 0, out
    assert READS == []
    trials = tmp_path / "results" / "tune" / "tuning" / "trials.jsonl"
    methods = [json.loads(line)["method"] for line in trials.read_text().splitlines()]
    assert sorted(methods) == ["pbu.t0", "pbu.t0"]  # no retraining
    doc = yaml.safe_load((tmp_path / "results" / "tune" / "tuned.yaml").read_text())
    assert [(e["method"], e["objective"], e["budget"]) for e in doc["entries"]] == [
        ("pbu", "forget-only", 1)]


def test_each_architecture_is_tuned_on_its_own_cells(poisoned_digits, tmp_path, capsys,
                                                     monkeypatch):
    # Two experiments that differ only in the architecture have the same configuration
    # hashes (the architecture is in a cell's key); a trial of one must never be served the
    # other's record.
    second = TUNE_GRID.split("experiments:\n")[1].replace("arch: smallcnn", "arch: allcnn")
    capped = (TUNE_GRID + second).replace("train: {epochs: 3}",
                                          "train: {epochs: 3}\n    tune_trials: 1")
    (tmp_path / "tune.yaml").write_text(capped)
    code, out = _tune(tmp_path, capsys, monkeypatch, "--methods", "pbu", "--tune-objective",
                      "forget-only")
    assert code == 0, out
    trials = tmp_path / "results" / "tune" / "tuning" / "trials.jsonl"
    records = [json.loads(line) for line in trials.read_text().splitlines()]
    assert sorted((r["arch"], r["forget_classes"]) for r in records) == [
        ("allcnn", "2"), ("allcnn", "6"), ("smallcnn", "2"), ("smallcnn", "6")]
    doc = yaml.safe_load((tmp_path / "results" / "tune" / "tuned.yaml").read_text())
    assert sorted(e["arch"] for e in doc["entries"]) == ["allcnn", "smallcnn"]


# ---------------------------------------------------------------- the validation view


def test_validation_view_holds_out_a_fraction_per_class_and_never_reads_test():
    from bench.data import load_dataset

    data = load_dataset("digits")
    poisoned = dataclasses.replace(data, test=Poisoned(), test_targets=Poisoned())
    READS.clear()
    view = validation_view(poisoned, fraction=0.2, seed=3)
    assert READS == []
    for c in range(10):
        total = int((data.train_targets == c).sum())
        assert int((view.test_targets == c).sum()) == round(0.2 * total)
    train_x = {row.numpy().tobytes() for row in view.train.tensors[0]}
    val_x = [row.numpy().tobytes() for row in view.test.tensors[0]]
    assert len(view.train_targets) + len(view.test_targets) == len(data.train_targets)
    assert not train_x & set(val_x)
    again = validation_view(data, fraction=0.2, seed=3)
    other = validation_view(data, fraction=0.2, seed=4)
    assert np.array_equal(again.test_targets, view.test_targets)
    assert not np.array_equal(other.test.tensors[0], view.test.tensors[0])


# ---------------------------------------------------------------- search spaces


@pytest.mark.parametrize(("space", "message"), [
    ({"learning_rate": LogUniform(1e-4, 1e-2)}, "'learning_rate', not a hyperparameter"),
    ({"lr": LogUniform(0.0, 1e-2)}, "needs finite 0 < low < high"),
    ({"lr": Uniform(1.0, 0.5)}, "needs finite low < high"),
    ({"lr": IntRange(1, 10)}, "draws integers but the default is 0.001"),
    ({"epochs": Uniform(1.0, 5.0)}, "draws floats but the default is 3"),
    ({"epochs": (1, 5)}, "allowed LogUniform, Uniform, IntRange or Choice"),
])
def test_search_space_is_checked_at_registration(space, message, clean_registry):
    @dataclasses.dataclass(kw_only=True)
    class Bad(UnlearningMethod):
        lr: float = 1e-3
        epochs: int = 3

        def unlearn(self, model, task):
            return model

    Bad.search_space = space
    with pytest.raises(PluginError) as info:
        register_method("bad_space")(Bad)
    assert message in str(info.value) and "bad_space" in str(info.value)
    assert "bad_space" not in clean_registry


def test_every_built_in_method_declares_a_space():
    from methods import get_method, list_methods

    empty = {name for name in list_methods() if not get_method(name).search_space}
    assert empty == {"retrain", "logit_mask", "pbu_official"}


# ---------------------------------------------------------------- the grid's tuned key


def _entry(**changes) -> dict:
    entry = {"method": "finetune", "registered_method": "finetune", "dataset": "digits",
             "arch": "smallcnn", "params": {"lr": 0.002}, "objective": "retrain-gap",
             "objective_value": 1.5, "budget": 8, "trials_completed": 8,
             "sampler": {"name": "TPESampler", "seed": 0, "n_startup_trials": 4, "batch": 4},
             "seed": 0, "forget_classes": ["2"], "validation_fraction": 0.2, "split_seed": 0,
             "code_version": "x"}
    return {**entry, **changes}


def _grid(tuned_path) -> dict:
    return {"name": "g", "seeds": [0], "tuned": str(tuned_path),
            "methods": ["finetune", {"name": "ft_pinned", "method": "finetune",
                                     "params": {"lr": 0.01}}],
            "experiments": [{"dataset": "digits", "arch": "smallcnn", "forget_classes": [[2]],
                             "method_params": {"finetune": {"lr": 0.003, "epochs": 2}}}]}


def test_tuned_values_override_method_params_but_not_a_variants_own(tmp_path, caplog):
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump({"grid": "g", "entries": [
        _entry(), _entry(method="ft_pinned", params={"lr": 0.0005, "epochs": 4})]}))
    with caplog.at_level("WARNING"):
        exp = parse_grid(_grid(path)).experiments[0]
    assert "finetune on digits/smallcnn was tuned for code version x" in caplog.text
    assert exp.params["finetune"] == {"lr": 0.002, "epochs": 2, "optimizer": "adam"}
    assert exp.param_sources["finetune"] == {"lr": "tuned", "epochs": "grid",
                                             "optimizer": "default"}
    assert exp.params["ft_pinned"]["lr"] == 0.01 and exp.params["ft_pinned"]["epochs"] == 4
    assert exp.param_sources["ft_pinned"] == {"lr": "grid", "epochs": "tuned",
                                              "optimizer": "default"}


@pytest.mark.parametrize(("document", "must_name"), [
    (None, "does not exist"),
    ("grid: g\nentries: [oops]\n", "entries[0]"),
    (yaml.safe_dump({"grid": "g", "entries": [_entry(objective="best")]}), "objective"),
    (yaml.safe_dump({"grid": "g", "entries": [_entry(surprise=1)]}), "unknown key"),
    (yaml.safe_dump({"grid": "g", "entries": [_entry(params={"lr": -1.0})]}), "lr"),
    (yaml.safe_dump({"grid": "g", "entries": [_entry(params={"momentum": 0.9})]}),
     "momentum"),
    (yaml.safe_dump({"grid": "g", "entries": [_entry(registered_method="pbu")]}),
     "made for method 'pbu'"),
])
def test_bad_tuned_file_is_bad_input(document, must_name, tmp_path, capsys, monkeypatch):
    files = {} if document is None else {"tuned.yaml": document}
    grid = textwrap.dedent("""\
        name: g
        seeds: [0]
        tuned: tuned.yaml
        methods: [finetune]
        experiments:
          - {dataset: digits, arch: smallcnn, forget_classes: [[2]]}
        """)
    outcome = run_main(tmp_path, {"g.yaml": grid, **files}, ["--grid", "g.yaml", "--dry-run"],
                       capsys, monkeypatch)
    assert_clean_bad_input(outcome, must_name)
    assert "tuned" in outcome[1]


def test_bad_tune_flags_are_bad_input(tmp_path, capsys, monkeypatch):
    outcome = run_main(tmp_path, {}, ["--tune", "0"], capsys, monkeypatch)
    assert_clean_bad_input(outcome, "--tune 0")
    outcome = run_main(tmp_path, {}, ["--tune", "2", "--tuned", "t.yaml"], capsys, monkeypatch)
    assert_clean_bad_input(outcome, "--tuned")
    with pytest.raises(BenchInputError, match="nope.yaml"):
        parse_grid({**_grid(tmp_path / "nope.yaml")})


def test_records_say_where_each_value_came_from(finished_run):
    records = [json.loads(line) for line in
               (finished_run.grid_dir / "runs.jsonl").read_text().splitlines()]
    finetune = next(r for r in records if r["method"] == "finetune")
    assert finetune["param_sources"] == {"epochs": "grid", "lr": "grid", "optimizer": "default"}
    original = next(r for r in records if r["method"] == "original")
    assert original["param_sources"] == {}


def test_readme_plugin_declares_its_space(tmp_path, clean_registry):
    from methods import get_method, load_plugins
    from methods.search import describe

    readme = (REPO / "README.md").read_text()
    code = readme.split("# my_method.py\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_method.py").write_text(code)
    load_plugins([tmp_path / "my_method.py"], use_entry_points=False)
    assert describe(get_method("zero_head").search_space) == "value [-10000, -10]"


def test_list_methods_shows_what_each_method_tunes(capsys):
    from bench import cli

    assert cli.main(["--list-methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    finetune = lines.index(next(line for line in lines if line.startswith("finetune ")))
    assert lines[finetune + 1].split() == ["tunes", "lr", "log[0.0001,", "0.01],", "epochs",
                                           "int[1,", "10]"]
    retrain = lines.index(next(line for line in lines if line.startswith("retrain ")))
    assert lines[retrain + 1].split() == ["tunes", "nothing"]


class _Fixed(torch.nn.Module):
    """Returns ``sign * x``: the inputs are the logits."""

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.sign = sign

    def forward(self, x):
        return self.sign * x


def test_objectives_score_as_declared():
    from bench.tuning.objective import OBJECTIVES, forget_agreement, trial_value

    x = torch.tensor([[5.0, 1.0, 3.0, 0.0], [5.0, 2.0, 0.0, 1.0]])  # class 0 is forgotten
    batches = [(x, torch.zeros(2, dtype=torch.int64))]
    # The original ranks classes 2 and 1 first among the retain classes.
    same = forget_agreement(_Fixed(1.0), _Fixed(1.0), forget=batches, forget_classes=(0,),
                            device=torch.device("cpu"))
    flipped = forget_agreement(_Fixed(-1.0), _Fixed(1.0), forget=batches, forget_classes=(0,),
                               device=torch.device("cpu"))
    assert (same, flipped) == (0.0, 0.0)  # the unlearned model still says class 0, then 3/2
    masked = torch.nn.Sequential(_Fixed(1.0))
    masked.register_forward_hook(lambda m, i, out: out.index_fill(1, torch.tensor([0]), -1e9))
    assert forget_agreement(masked, _Fixed(1.0), forget=batches, forget_classes=(0,),
                            device=torch.device("cpu")) == 100.0

    trial = [{"acc_forget_test": 10.0, "acc_retain_test": 90.0, "forget_agreement": 80.0}] * 2
    retrain = [{"acc_forget_test": 0.0, "acc_retain_test": 95.0}] * 2
    assert trial_value(OBJECTIVES["retrain-gap"], records=trial, references=retrain) == 15.0
    assert trial_value(OBJECTIVES["forget-only"], records=trial,
                       references=[None, None]) == 30.0
    assert not OBJECTIVES["forget-only"].needs_retrain
    assert trial_value(OBJECTIVES["retrain-gap"], records=[{"error": "boom"}, trial[0]],
                       references=retrain) is None


@pytest.mark.parametrize("grid_name", ["quick", "all-methods", "fashion"])
def test_built_in_grids_run_their_committed_tuned_files(grid_name):
    from bench.harness.builtin_grids import BUILTIN_GRIDS, tuned_file
    from bench.harness.grid import load_grid
    from bench.harness.versions import code_version
    from bench.tuning.tuned_file import TunedFile, read_tuned
    from bench.tuning.tuner import tuning_space
    from methods import get_method

    assert BUILTIN_GRIDS[grid_name]["tuned"] == tuned_file(grid_name)
    grid = load_grid(grid_name)
    doc = TunedFile.model_validate(read_tuned(tuned_file(grid_name)))
    entries = doc.lookup()
    for exp in grid.experiments:
        budget = exp.tune_trials or max(e.budget for e in doc.entries)
        for spec in (s for s in grid.methods if exp.runs(s.label)):
            entry = entries.get((spec.label, exp.dataset, exp.arch))
            # Every method with something to tune has an entry; the others have none.
            assert (entry is not None) == bool(tuning_space(spec)), (exp.arch, spec.label)
            if entry is None:
                continue
            # Made by the method's current code with one budget for all, and in use.
            assert entry.code_version == code_version(get_method(spec.method)), spec.label
            assert entry.budget == budget and entry.trials_completed == budget, spec.label
            assert {k: exp.params[spec.label][k] for k in entry.params} == entry.params
            assert set(entry.params) <= {k for k, v in exp.param_sources[spec.label].items()
                                         if v == "tuned"}
