"""Grid files and flags are validated before anything runs: one line, exit 2, nothing written."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench import cli

GOOD = {
    "name": "g",
    "seeds": "[0]",
    "methods": "[finetune]",
    "experiment": "{dataset: digits, arch: smallcnn, forget_classes: [[2]], "
                  "train: {epochs: 1}, method_params: {finetune: {epochs: 1}}}",
}


def _yaml(**overrides: str) -> str:
    parts = {**GOOD, **overrides}
    lines = [f"{key}: {value}" for key, value in parts.items() if key != "experiment" and value]
    lines.append(f"experiments:\n  - {parts['experiment']}")
    return "\n".join(lines) + "\n"


def _experiment(**fields: str) -> str:
    base = {"dataset": "digits", "arch": "smallcnn", "forget_classes": "[[2]]",
            "train": "{epochs: 1}"}
    base.update(fields)
    return "{" + ", ".join(f"{k}: {v}" for k, v in base.items() if v is not None) + "}"


# (grid text, words the one error line must contain)
BAD_GRIDS = {
    "misspelt top-level key": (_yaml(seeds="", ) + "seed: [0]\n", ["seed", "unknown key"]),
    "misspelt method key": (_yaml(methods="[{name: x, method: pbu, param: {lr: 1}}]"),
                            ["methods[0].param", "unknown key"]),
    "unknown method parameter": (_yaml(experiment=_experiment(
        method_params="{finetune: {lrr: 1}}")),
        ["experiments[0].method_params.finetune.lrr", "unknown key"]),
    "duplicate seeds": (_yaml(seeds="[0, 0]"), ["seeds", "appears twice"]),
    "duplicate classes": (_yaml(experiment=_experiment(forget_classes="[[2], [2]]")),
                          ["forget_classes", "twice"]),
    "duplicate methods": (_yaml(methods="[finetune, finetune]"), ["methods[1]", "unique"]),
    "empty seeds": (_yaml(seeds="[]"), ["seeds"]),
    "negative seed": (_yaml(seeds="[-1]"), ["seeds[0]", "-1"]),
    "zero fine-tuning epochs": (_yaml(experiment=_experiment(
        method_params="{finetune: {epochs: 0}}")),
        ["experiments[0].method_params.finetune", "epochs"]),
    "nan learning rate": (_yaml(experiment=_experiment(method_params="{finetune: {lr: .nan}}")),
                          ["method_params.finetune.lr", "finite"]),
    "negative learning rate": (_yaml(experiment=_experiment(
        method_params="{finetune: {lr: -0.1}}")), ["finetune", "lr"]),
    "infinite training lr": (_yaml(experiment=_experiment(train="{lr: .inf}")),
                             ["experiments[0].train.lr", "finite"]),
    "zero batch size": (_yaml(experiment=_experiment(train="{batch_size: 0}")),
                        ["experiments[0].train", "batch_size"]),
    "word for a number": (_yaml(experiment=_experiment(train="{epochs: many}")),
                          ["experiments[0].train.epochs", "'many'"]),
    "params as a list": (_yaml(methods="[{name: x, method: pbu, params: [1]}]"),
                         ["methods[0].params", "dictionary"]),
    "train as a list": (_yaml(experiment=_experiment(train="[1]")),
                        ["experiments[0].train"]),
    "method_params as a list": (_yaml(experiment=_experiment(method_params="[1]")),
                                ["experiments[0].method_params"]),
    "split_seed a word": (_yaml(experiment=_experiment(split_seed="random")),
                          ["experiments[0].split_seed", "'random'"]),
    "negative split_seed": (_yaml(experiment=_experiment(split_seed="-3")),
                            ["experiments[0].split_seed"]),
    "long name": (_yaml(name="x" * 300), ["name", "xxx..."]),
    "name with a NUL": (_yaml(name='"a\\0b"'), ["name"]),
    "name with a slash": (_yaml(name="a/b"), ["name"]),
    "unknown dataset": (_yaml(experiment=_experiment(dataset="nope")),
                        ["experiments[0]", "unknown dataset 'nope'", "available"]),
    "class out of range": (_yaml(experiment=_experiment(forget_classes="[[12]]")),
                           ["forget_classes[0]", "12"]),
    "unknown method": (_yaml(methods="[nope]"), ["methods[0]", "unknown method 'nope'"]),
    "not a mapping": ("- 1\n- 2\n", ["valid dictionary"]),
    "empty file": ("", ["valid dictionary"]),
}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _assert_clean_bad_input(folder: Path, capsys, argv: list[str], words: list[str]) -> None:
    before = sorted(str(p) for p in folder.rglob("*"))
    code = cli.main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("run_bench.py: error: "), err
    for word in words:
        assert word in err[0], (word, err[0])
    assert sorted(str(p) for p in folder.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("case", sorted(BAD_GRIDS))
def test_bad_grid_file(in_tmp, capsys, case):
    text, words = BAD_GRIDS[case]
    (in_tmp / "grid.yaml").write_text(text)
    _assert_clean_bad_input(in_tmp, capsys, ["--grid", "grid.yaml"], ["grid.yaml", *words])


BAD_FLAGS = {
    "seeds empty": (["--seeds", ""], ["--seeds"]),
    "seeds comma": (["--seeds", ","], ["--seeds"]),
    "seeds zero": (["--seeds", "0"], ["seeds"]),
    "seeds duplicated": (["--seeds", "1,1"], ["seeds", "twice"]),
    "methods comma": (["--methods", ","], ["--methods"]),
    "methods duplicated": (["--methods", "pbu,pbu"], ["unique"]),
    "classes duplicated": (["--classes", "2,2"], ["twice"]),
    "classes word": (["--classes", "two"], ["--classes"]),
    "classes empty part": (["--classes", "2+"], ["--classes"]),
    "jobs zero": (["--jobs", "0"], ["--jobs"]),
    "threads zero": (["--threads", "0"], ["--threads"]),
    "unknown grid": (["--grid", "nope"], ["unknown grid 'nope'"]),
    "missing grid file": (["--grid", "missing.yaml"], ["missing.yaml"]),
    "unknown method": (["--methods", "nope"], ["unknown method 'nope'"]),
    "device": (["--device", "tpu"], ["--device"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flag(in_tmp, capsys, case):
    argv, words = BAD_FLAGS[case]
    _assert_clean_bad_input(in_tmp, capsys, argv, words)


def test_unused_method_params_are_validated_too(in_tmp, capsys):
    (in_tmp / "grid.yaml").write_text(_yaml(experiment=_experiment(
        method_params="{pbu_official: {epochs: -1}}")))
    _assert_clean_bad_input(in_tmp, capsys, ["--grid", "grid.yaml"],
                            ["method_params.pbu_official", "epochs"])


def test_empty_idx_files_are_bad_input(in_tmp, capsys):
    root = in_tmp / "mnist"
    root.mkdir()
    for prefix in ("train", "t10k"):
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(
            (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (0, 28, 28)))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(
            (0x801).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    (in_tmp / "grid.yaml").write_text(_yaml(experiment=_experiment(dataset="mnist")))
    _assert_clean_bad_input(in_tmp, capsys, ["--grid", "grid.yaml", "--data-root", str(root)],
                            ["holds no images"])


def test_a_good_grid_parses_with_resolved_parameters(in_tmp):
    from bench.harness.grid import load_grid

    (in_tmp / "grid.yaml").write_text(textwrap.dedent("""\
        name: ok
        seeds: 2
        methods: [finetune, {name: pbu_b0, method: pbu, params: {beta: 0}}]
        experiments:
          - {dataset: digits, arch: smallcnn, forget_classes: [2, [6, 2]],
             method_params: {pbu_b0: {lr: "3e-5"}}}
    """))
    grid = load_grid("grid.yaml")
    assert grid.seeds == (0, 1)
    exp = grid.experiments[0]
    assert exp.forget_classes == ((2,), (2, 6))
    assert exp.params["pbu_b0"]["beta"] == 0 and exp.params["pbu_b0"]["lr"] == 3e-5
    assert exp.params["pbu_b0"]["gamma"] == 4001.0  # untouched defaults are resolved too
    assert exp.params["finetune"] == {"lr": 1e-3, "epochs": 10, "optimizer": "adam"}
