"""Grids: narrowed as raw data, parsed once by the schema, every method's parameters resolved."""
from __future__ import annotations

import copy
import dataclasses

import pytest
from helpers import PAPER_METHODS, grid_yaml, write_grid

from bench.errors import BenchInputError
from bench.harness.builtin_grids import BUILTIN_GRIDS, REFERENCE_METHODS
from bench.harness.grid import Experiment, load_grid, load_raw_grid, narrow, parse_grid
from methods import PBU, FineTune, PBUOfficial, get_method
from methods.training import TrainRecipe


def quick_raw() -> dict:
    return copy.deepcopy(BUILTIN_GRIDS["quick"])


def bad(raw: dict, where: str = "grid") -> str:
    with pytest.raises(BenchInputError) as info:
        parse_grid(raw, where=where)
    return str(info.value)


# ---------------------------------------------------------------- resolved parameters


def test_every_method_gets_its_defaults_then_the_grid_then_the_tuned_file():
    from bench.harness.builtin_grids import PUBLISHED_VARIANTS, tuned_file
    from bench.tuning.tuned_file import TunedFile, read_tuned

    exp = load_grid("quick").experiments[0]
    variants = {v["name"]: v for v in PUBLISHED_VARIANTS}
    assert set(exp.params) == {*PAPER_METHODS, *variants, *REFERENCE_METHODS}
    tuned = TunedFile.model_validate(read_tuned(tuned_file("quick"))).lookup()
    for label, params in exp.params.items():
        method = variants[label]["method"] if label in variants else label
        entry = tuned.get((label, "digits", "smallcnn"))
        expected = {**get_method(method).default_params(),
                    **(variants[label]["params"] if label in variants else {}),
                    **(entry.params if entry else {})}
        assert params == expected, label
        assert ("tuned" in exp.param_sources[label].values()) == (entry is not None), label
    # Every method that declares a search space is tuned; the published variants never are.
    assert {label for label, _, _ in tuned} == {"finetune", "fast_effective", "bad_teaching",
                                                "pbu"}
    for name, variant in variants.items():
        assert set(exp.param_sources[name].values()) <= {"default", "grid"}, name
        assert {k: exp.params[name][k] for k in variant["params"]} == variant["params"]


def test_labelled_entries_resolve_method_params_and_experiment_overrides():
    exp = load_grid("pbu-ablation").experiments[0]
    assert exp.params["pbu_beta0"] == {**PBU.default_params(), "beta": 0.0}
    assert exp.params["pbu_mc"]["fisher"] == "mc"
    assert exp.params["pbu_official"] == {**PBUOfficial.default_params(), "epochs": 235}
    assert PBUOfficial.default_params()["batchnorm"] == "train"
    grid = load_grid("pbu-ablation")
    spec = next(m for m in grid.methods if m.label == "pbu_gamma0")
    assert (spec.method, spec.params) == ("pbu", {"gamma": 0.0})


def test_methods_are_keyword_only_dataclasses_with_their_signature_as_defaults():
    assert dataclasses.is_dataclass(FineTune)
    assert FineTune.default_params() == {f.name: f.default for f in dataclasses.fields(FineTune)}
    assert FineTune(lr=0.5).params() == {**FineTune.default_params(), "lr": 0.5}
    with pytest.raises(TypeError):
        FineTune(0.5)  # keyword-only


def test_train_recipe_is_validated_and_frozen():
    exp = load_grid("quick").experiments[0]
    assert exp.train == TrainRecipe(epochs=15, lr=1e-3, batch_size=64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.train.epochs = 3
    with pytest.raises(ValueError, match="optimizer"):
        TrainRecipe(optimizer="rmsprop")


# ---------------------------------------------------------------- narrowing


def test_narrow_works_on_the_raw_mapping_and_leaves_it_alone():
    raw = quick_raw()
    before = copy.deepcopy(raw)
    narrowed = narrow(raw, methods=["pbu", "pbu_official"], seeds=[4], classes=[[2, 6]])
    assert raw == before
    assert isinstance(narrowed, dict)
    assert narrowed["methods"] == ["pbu", "pbu_official"] and narrowed["seeds"] == [4]
    assert narrowed["experiments"][0]["forget_classes"] == [[2, 6]]
    assert narrow(raw) == raw


def test_narrowing_keeps_a_labelled_entry_and_adds_a_method_outside_the_grid():
    raw, _ = load_raw_grid("pbu-ablation")
    narrowed = narrow(raw, methods=["pbu_mc", "finetune"])
    assert narrowed["methods"] == [{"name": "pbu_mc", "method": "pbu",
                                    "params": {"fisher": "mc"}}, "finetune"]
    grid = parse_grid({**narrowed, "experiments": [{
        **narrowed["experiments"][0], "method_params": {"pbu_mc": {"lr": 3e-5}}}]})
    assert [m.label for m in grid.methods] == ["pbu_mc", "finetune"]
    assert grid.experiments[0].params["pbu_mc"] == {**PBU.default_params(), "fisher": "mc",
                                                    "lr": 3e-5}
    assert grid.experiments[0].params["finetune"] == FineTune.default_params()


def test_methods_flag_can_narrow_a_grid_with_labelled_entries():
    grid = load_grid("quick", methods=["fast_effective_paper", "pbu_official"], seeds=2,
                     classes=[[8]])
    assert [m.label for m in grid.methods] == ["fast_effective_paper", "pbu_official"]
    assert grid.seeds == (0, 1)
    assert grid.experiments[0].forget_classes == ((8,),)
    # pbu_official is not in the quick grid's list, but its experiment settings (235 epochs)
    # apply when --methods adds it back.
    assert grid.experiments[0].params["pbu_official"] == {**PBUOfficial.default_params(),
                                                          "epochs": 235}


def _two_experiments(**second: object) -> dict:
    raw = quick_raw()
    raw.pop("tuned")
    raw["experiments"] = [raw["experiments"][0], {**raw["experiments"][0], "arch": "allcnn",
                                                  **second}]
    return raw


def test_an_experiment_can_run_a_subset_of_the_grids_methods():
    from bench.harness.cells import grid_cells

    grid = parse_grid(_two_experiments(methods=["pbu", "logit_mask"]))
    by_arch: dict[str, set[str]] = {}
    for cell in grid_cells(grid):
        by_arch.setdefault(cell.experiment.arch, set()).add(cell.label)
    assert by_arch["allcnn"] == {"original", "pbu", "logit_mask"}
    assert by_arch["smallcnn"] == {"original", *grid.experiments[0].params}
    # --methods keeps what each experiment asked for; a method new to the grid joins both;
    # an experiment left with none of its methods runs nothing, originals included.
    narrowed = parse_grid(narrow(_two_experiments(methods=["pbu"]),
                                 methods=["pbu", "finetune", "scrub"]))
    assert narrowed.experiments[1].methods == ("pbu", "scrub")
    assert {c.experiment.arch for c in grid_cells(parse_grid(narrow(
        _two_experiments(methods=["pbu"]), methods=["finetune"])))} == {"smallcnn"}
    message = bad(_two_experiments(methods=["pbu", "scrub"]))
    assert message.startswith("grid: experiments[1].methods[1] = 'scrub': not a method of "
                              "this grid; methods: ")


def test_an_experiment_can_run_the_first_seeds_of_the_grid_only():
    from bench.harness.cells import grid_cells

    def seeds_by_arch(grid) -> dict[str, set[int]]:
        found: dict[str, set[int]] = {}
        for cell in grid_cells(grid):
            found.setdefault(cell.experiment.arch, set()).add(cell.seed)
        return found

    assert seeds_by_arch(parse_grid(_two_experiments(max_seeds=2))) == {
        "smallcnn": {0, 1, 2}, "allcnn": {0, 1}}
    # --seeds replaces the grid's seeds; the cap still takes the first of them.
    narrowed = parse_grid(narrow(_two_experiments(max_seeds=1), seeds=[4, 5]))
    assert seeds_by_arch(narrowed) == {"smallcnn": {4, 5}, "allcnn": {4}}
    assert "max_seeds" in bad(_two_experiments(max_seeds=0))
    message = bad({**_two_experiments(max_seeds=1), "shadows": 6})
    assert message.startswith("grid: experiments[1].max_seeds = 1: cannot be combined with "
                              "shadows")


def test_narrowing_is_validated_like_the_grid_itself():
    with pytest.raises(BenchInputError,
                       match=r"^built-in grid 'quick': seeds = \[0, 0\]: 0 appears twice$"):
        load_grid("quick", seeds=[0, 0])
    with pytest.raises(BenchInputError, match=r"^built-in grid 'quick': methods\[1\]"):
        load_grid("quick", methods=["pbu", "no_such_method"])


# ---------------------------------------------------------------- errors name the key path


def test_bad_method_parameter_names_the_file_path_and_value(tmp_path):
    path = write_grid(tmp_path, grid_yaml(method_params="{pbu: {lr: abc}}")
                      .replace("[finetune]", "[pbu]"), "g.yaml")
    with pytest.raises(BenchInputError) as info:
        load_grid(str(path))
    assert str(info.value).startswith(
        f"grid file {str(path)!r}: experiments[0].method_params.pbu.lr = 'abc': "
        "Input should be a valid number")


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.update(colour="red"), "grid: colour = 'red': unknown key"),
    (lambda r: r.update(seeds=[]), "grid: seeds = []: "),
    (lambda r: r.update(methods=[{"name": "original", "method": "pbu"}]),
     "grid: methods[0] = 'original': method labels must be unique and not 'original'"),
    (lambda r: r.update(methods=["original"]), "grid: methods[0]: unknown method 'original'"),
    (lambda r: r.update(methods=["pbu", {"name": "pbu", "method": "pbu"}]),
     "grid: methods[1] = 'pbu': method labels must be unique"),
    (lambda r: r["experiments"][0].update(forget_classes=[[2], [2]]),
     "grid: experiments[0].forget_classes = [[2], [2]]: (2,) appears twice"),
    (lambda r: r["experiments"][0].update(forget_classes=[list(range(10))]),
     "leaves no class to retain"),
    (lambda r: r["experiments"][0]["method_params"].update(nope_method={}),
     "grid: experiments[0].method_params = 'nope_method': not a method of this grid"),
    # Settings for a registered method the grid does not run are checked too.
    (lambda r: r["experiments"][0]["method_params"].update(pbu_official={"epochs": 0}),
     "grid: experiments[0].method_params.pbu_official = {'epochs': 0}: epochs=0"),
    (lambda r: r["experiments"][0]["train"].update(lr=float("nan")),
     "grid: experiments[0].train.lr = nan: "),
    (lambda r: r["experiments"][0].update(pretrained="coco"),
     "grid: experiments[0].pretrained = 'coco': "),
])
def test_schema_errors_are_one_line_with_the_key_path(change, message):
    raw = quick_raw()
    change(raw)
    text = bad(raw)
    assert message in text, text
    assert "\n" not in text


# Booleans are not numbers: YAML reads `yes`, `true`, `on` as True.
BOOLEAN_IN_A_NUMBER = [
    pytest.param(lambda r: r.update(seeds=True), id="seeds"),
    pytest.param(lambda r: r.update(seeds=[True, 2]), id="seed-in-list"),
    pytest.param(lambda r: r["experiments"][0].update(forget_classes=[[True]]),
                 id="forget-class"),
    pytest.param(lambda r: r["experiments"][0]["train"].update(epochs=True), id="train-epochs"),
    pytest.param(lambda r: r["experiments"][0]["method_params"].update(
        finetune={"epochs": True}), id="method-epochs"),
    pytest.param(lambda r: r["experiments"][0].update(split_seed=True), id="split-seed"),
]


@pytest.mark.parametrize("change", BOOLEAN_IN_A_NUMBER)
def test_a_boolean_where_a_number_belongs_is_rejected(change):
    raw = quick_raw()
    change(raw)
    bad(raw)


def test_a_parsed_grid_is_plain_frozen_data():
    grid = load_grid("quick")
    exp = grid.experiments[0]
    assert isinstance(exp, Experiment)
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.dataset = "mnist"
    assert exp.data_spec == {"dataset": "digits", "split_seed": 0}
    assert exp.model_spec == {"arch": "smallcnn"}
    assert grid.seeds == (0, 1, 2) and grid.curves is True


def test_the_readme_grid_file_parses():
    import yaml
    from helpers import REPO

    readme = (REPO / "README.md").read_text()
    block = next(b.split("```", 1)[0] for b in readme.split("```yaml\n")[1:]
                 if b.startswith("name: my-grid"))
    raw = yaml.safe_load(block)
    raw.pop("tuned")   # made by --tune; the file does not exist here
    grid = parse_grid(raw)
    assert [e.methods for e in grid.experiments] == [None, ("retrain", "pbu")]
    assert grid.experiments[1].tune_trials == 4 and grid.experiments[1].max_seeds == 1
