"""``python run_bench.py``: bad input, dry runs, resuming, re-rendering and plugins, end to end.

The grids here are tiny (digits, smallcnn, 3 epochs, one class, one seed); see helpers.py.
What does not need a real process runs in-process through ``bench.cli.main``.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    OUT,
    PAPER_METHODS,
    TINY_CELLS,
    TINY_GRID_YAML,
    FinishedRun,
    assert_clean_bad_input,
    grid_yaml,
    make_case,
    run_cli,
    run_main,
    start_cli,
    tree,
    write_grid,
)

from bench.errors import BenchInputError
from bench.harness.grid import load_grid

ZERO_HEAD_PLUGIN = '''\
"""A plugin outside the repository: silence the forget classes in the classifier head."""
import torch
from torch import nn

from methods import UnlearningMethod, register_method


@register_method("zero_head")
class ZeroHead(UnlearningMethod):
    """Zero-head: zero the forget classes' rows of the last Linear layer, bias -1e4."""

    needs = frozenset({"forget"})

    def __init__(self, *, bias: float = -1e4):
        self.bias = bias

    def unlearn(self, model, task):
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            for c in task.forget_classes:
                head.weight[c].zero_()
                head.bias[c] = self.bias
        return model
'''


def records(run: FinishedRun) -> list[dict]:
    lines = (run.grid_dir / "runs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def summary_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def cache_state(run: FinishedRun) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (run.results / ".model_cache").iterdir()}


# ---------------------------------------------------------------- bad input

# name -> (files to create: {relative path: text, bytes or None for a folder}, arguments,
#          text the one error line must contain)
BAD_INPUTS = {
    "unknown-grid": ({}, ["--grid", "nope_grid"], "unknown grid 'nope_grid'"),
    "unknown-method-flag": ({"g.yaml": grid_yaml()}, ["--grid", "g.yaml", "--methods", "nope"],
                            "'nope'"),
    "unknown-method-yaml": ({"g.yaml": grid_yaml().replace("[finetune]", "[finetune, nope_m]")},
                            ["--grid", "g.yaml"], "nope_m"),
    "unknown-dataset": ({"g.yaml": grid_yaml(dataset="nope_data")}, ["--grid", "g.yaml"],
                        "nope_data"),
    "unknown-arch": ({"g.yaml": grid_yaml(arch="nope_net")}, ["--grid", "g.yaml"], "nope_net"),
    "forget-class-10": ({"g.yaml": grid_yaml(forget_classes="[[2], [10]]")},
                        ["--grid", "g.yaml"], "experiments[0].forget_classes[1] = 10"),
    "classes-flag-10": ({"g.yaml": grid_yaml()}, ["--grid", "g.yaml", "--classes", "2,10"],
                        "= 10: outside"),
    "unknown-train-setting": ({"g.yaml": grid_yaml(train="{epochz: 3}")}, ["--grid", "g.yaml"],
                              "experiments[0].train.epochz = 3: unknown key"),
    "unknown-experiment-key": ({"g.yaml": grid_yaml(datasett="digits")}, ["--grid", "g.yaml"],
                               "experiments[0].datasett = 'digits': unknown key"),
    "unknown-method-param": ({"g.yaml": grid_yaml(method_params="{finetune: {lrr: 1}}")},
                             ["--grid", "g.yaml"],
                             "experiments[0].method_params.finetune.lrr = 1: unknown key"),
    "method-param-not-a-number": ({"g.yaml": grid_yaml(method_params="{finetune: {lr: abc}}")},
                                  ["--grid", "g.yaml"],
                                  ("grid file 'g.yaml': experiments[0].method_params.finetune.lr"
                                   " = 'abc': Input should be a valid number")),
    "duplicate-seeds-yaml": ({"g.yaml": grid_yaml().replace("seeds: [0]", "seeds: [0, 0]")},
                             ["--grid", "g.yaml"], "seeds = [0, 0]: 0 appears twice"),
    "invalid-yaml": ({"broken.yaml": "name: x\nexperiments: [\n"}, ["--grid", "broken.yaml"],
                     "'broken.yaml' is not valid YAML"),
    "yaml-not-a-mapping": ({"list.yaml": "- 1\n- 2\n"}, ["--grid", "list.yaml"],
                           "grid file 'list.yaml': (top level) = [1, 2]"),
    "yaml-alias-bomb": ({"bomb.yaml": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh"))}, ["--grid", "bomb.yaml"], "through its aliases"),
    "yaml-too-large": ({"big.yaml": "# " + "x" * (1 << 20) + "\n"}, ["--grid", "big.yaml"],
                       "larger than"),
    "not-utf8": ({"latin.yaml": b"name: caf\xe9\nexperiments: []\n"}, ["--grid", "latin.yaml"],
                 "'latin.yaml' is not UTF-8"),
    "unreadable-yaml": ({"folder.yaml": None}, ["--grid", "folder.yaml"], "folder.yaml"),
    "missing-yaml": ({}, ["--grid", "missing.yaml"], "cannot read grid file 'missing.yaml'"),
    "missing-dataset-files": ({"g.yaml": grid_yaml(dataset="mnist"), "empty": None},
                              ["--grid", "g.yaml", "--data-root", "empty"], "mnist"),
    "plugin-raises": ({"boom_plugin.py": "raise RuntimeError('boom')\n"},
                      ["--plugin", "boom_plugin.py"], "boom_plugin.py"),
    "missing-plugin": ({}, ["--plugin", "nowhere_plugin.py"], "nowhere_plugin.py"),
    "device-cuda": ({}, ["--device", "cuda"], "cuda"),
    "device-unknown": ({}, ["--device", "tpu"], "tpu"),
    "seeds-not-numbers": ({}, ["--seeds", "abc"], "--seeds 'abc'"),
    "seeds-zero-count": ({}, ["--seeds", "0"], "seeds = 0: Input should be greater than 0"),
    "seeds-empty": ({}, ["--seeds", ""], "--seeds ''"),
    "seeds-comma": ({}, ["--seeds", ","], "--seeds ','"),
    "seeds-trailing-comma": ({}, ["--seeds", "0,"], "--seeds '0,'"),
    "seeds-duplicate": ({}, ["--seeds", "0,1,0"], "seeds = [0, 1, 0]: 0 appears twice"),
    "classes-duplicate": ({}, ["--classes", "2,6,2"], "appears twice"),
    "classes-duplicate-in-a-set": ({}, ["--classes", "2+2"], "2 appears twice"),
    "classes-empty-item": ({}, ["--classes", "2,"], "--classes"),
    "methods-comma": ({}, ["--methods", ","], "--methods ','"),
    "methods-empty": ({}, ["--methods", ""], "--methods ''"),
    "methods-duplicate": ({}, ["--methods", "pbu,finetune,pbu"], "'pbu'"),
    "jobs-zero": ({}, ["--jobs", "0"], "--jobs"),
    "shadows-too-few": ({}, ["--shadows", "4"], "shadows = 4: needs an even number of at least"),
    "shadows-odd": ({}, ["--shadows", "7"], "shadows = 7: needs an even number"),
    "shadows-grid-key": ({"g.yaml": grid_yaml() + "shadows: 2\n"}, ["--grid", "g.yaml"],
                         "shadows = 2"),
    "shadows-with-tune": ({}, ["--shadows", "6", "--tune", "2"],
                          "--tune cannot be combined with --shadows"),
    "unknown-flag": ({}, ["--frobnicate"], "--frobnicate"),
}
# Every case runs in-process through bench.cli.main (the code behind run_bench.py minus the
# interpreter start). One case also runs as a real process in the default run, for the exit
# status, stderr and the entry point; the others are marked slow (each costs ~4 s of CPU).
SUBPROCESS_DEFAULT = "forget-class-10"
SUBPROCESS_SLOW = ["unknown-grid", "unknown-method-flag", "unknown-dataset", "unknown-arch",
                   "invalid-yaml", "unreadable-yaml", "missing-yaml", "plugin-raises",
                   "device-cuda", "seeds-not-numbers", "methods-comma"]


def skip_cuda_case_on_gpu(case: str) -> None:
    if case == "device-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")


@pytest.mark.parametrize("case", [SUBPROCESS_DEFAULT, *(
    pytest.param(c, marks=pytest.mark.slow) for c in SUBPROCESS_SLOW)])
def test_bad_input_process_exits_2_with_one_line_and_writes_nothing(case, tmp_path):
    skip_cuda_case_on_gpu(case)
    files, args, must_name = BAD_INPUTS[case]
    folder = tmp_path / "case"
    before = make_case(folder, files)
    result = run_cli([*args, *OUT], cwd=folder)
    assert_clean_bad_input((result.returncode, result.stderr, before, tree(folder)), must_name)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_main_returns_2_with_one_line_and_writes_nothing(case, tmp_path, capsys,
                                                                  monkeypatch, clean_registry):
    skip_cuda_case_on_gpu(case)
    files, args, must_name = BAD_INPUTS[case]
    assert_clean_bad_input(run_main(tmp_path / "case", files, args, capsys, monkeypatch),
                           must_name)


@pytest.mark.parametrize(("seeds", "expected"), [("3", (0, 1, 2)), ("4,1", (4, 1)),
                                                 ("5", (0, 1, 2, 3, 4))])
def test_seeds_flag_is_a_count_or_a_list(seeds, expected, tmp_path, monkeypatch, capsys):
    write_grid(tmp_path, TINY_GRID_YAML, "tiny.yaml")
    monkeypatch.chdir(tmp_path)
    from bench import cli

    assert cli.main(["--grid", "tiny.yaml", "--dry-run", "--seeds", seeds, *OUT]) == 0
    keys = [line.split()[1] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert sorted({int(k.rsplit("/", 1)[1]) for k in keys}) == sorted(expected)
    assert len(keys) == TINY_CELLS * len(expected)


@pytest.mark.parametrize("where", ["method_params", "train"])
def test_yaml_exponent_without_dot_is_a_number_or_bad_input(where, tmp_path):
    field = ({"method_params": "{finetune: {lr: 3e-3}}"} if where == "method_params"
             else {"train": "{epochs: 1, lr: 3e-3}"})
    path = write_grid(tmp_path, grid_yaml(**field))
    try:
        grid = load_grid(str(path))
    except BenchInputError as exc:
        assert "3e-3" in str(exc)
        return
    exp = grid.experiments[0]
    lr = exp.params["finetune"]["lr"] if where == "method_params" else exp.train.lr
    assert isinstance(lr, float) and lr == pytest.approx(0.003)


def test_invalid_method_parameter_value_is_bad_input(tmp_path):
    path = write_grid(tmp_path, grid_yaml(method_params="{pbu: {batchnorm: frozen}}")
                      .replace("[finetune]", "[pbu]"))
    with pytest.raises(BenchInputError, match=r"experiments\[0\]\.method_params\.pbu = .*"
                                              r"batchnorm='frozen'"):
        load_grid(str(path))


# ---------------------------------------------------------------- in-process runs


@pytest.fixture
def main_in(monkeypatch, caplog):
    """``bench.cli.main(ARGS + OUT)`` in a folder, in this process; returns its exit status.

    One CPU as far as the CLI can tell: one cell at a time, in this process, with one torch
    thread (what the CLI subprocess runs give each of their workers). The log goes to caplog.
    """
    from bench import cli

    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    caplog.set_level(logging.INFO, logger="bench")

    def main(args: list[str], *, cwd: Path) -> int:
        monkeypatch.chdir(cwd)
        return cli.main([*map(str, args), *OUT])

    return main


# ---------------------------------------------------------------- listing and dry runs


def test_list_methods_lists_the_paper_methods(tmp_path):
    result = run_cli(["--list-methods"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert set(PAPER_METHODS) <= set(listed)
    assert "PBU" in listed["pbu"] and "Retraining" in listed["retrain"]
    assert list(tmp_path.iterdir()) == []


def test_dry_run_lists_cells_and_writes_nothing(tmp_path):
    write_grid(tmp_path, TINY_GRID_YAML, "tiny.yaml")
    result = run_cli(["--grid", "tiny.yaml", "--dry-run", "--seeds", "0,1", *OUT], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("6 cells, 6 to run: about ")
    cells = sorted(line.split()[1] for line in lines[:-1])
    assert cells == sorted(f"digits/smallcnn/2/{m}/{s}" for m in ("original", "pbu", "finetune")
                           for s in (0, 1))
    assert all(line.startswith("todo  ") for line in lines[:-1])
    assert tree(tmp_path) == {"tiny.yaml"}


def test_dry_run_of_a_finished_grid_shows_all_done(finished_run, tmp_path, main_in, capsys):
    run = finished_run.copy_to(tmp_path / "run")
    before = tree(run.root)
    capsys.readouterr()
    assert main_in(["--grid", "tiny.yaml", "--dry-run"], cwd=run.root) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith(f"{TINY_CELLS} cells, 0 to run: about 0 FLOP")
    assert len(lines) == TINY_CELLS + 1
    assert all(line.startswith("done  ") for line in lines[:-1])
    assert tree(run.root) == before


# ---------------------------------------------------------------- a finished grid


def test_finished_run_wrote_records_tables_and_figures(finished_run):
    run = finished_run
    recs = records(run)
    assert sorted(r["method"] for r in recs) == ["finetune", "original", "pbu"]
    for r in recs:
        assert r["dataset"] == "digits" and r["forget_classes"] == "2" and r["seed"] == 0
        assert r["device"] == "cpu" and "git_commit" in r and "torch" in r["versions"]
    assert next(r for r in recs if r["method"] == "finetune")["params"]["lr"] == 0.003
    for name in ("summary.csv", "table.md", "table.tex"):
        assert (run.grid_dir / name).stat().st_size > 0
    assert {p.name for p in (run.plots / "tiny").iterdir()} >= {"accuracy.png", "time.pdf"}
    assert len(summary_rows(run.grid_dir / "summary.csv")) == 3
    assert "trained original" in run.result.stderr


def test_second_run_computes_nothing_and_render_only_restores_tables(finished_run, tmp_path,
                                                                     main_in, caplog):
    run = finished_run.copy_to(tmp_path / "run")
    runs_before = (run.grid_dir / "runs.jsonl").read_bytes()
    table_md = (run.grid_dir / "table.md").read_text()
    cache_before = cache_state(run)

    assert main_in(["--grid", "tiny.yaml"], cwd=run.root) == 0
    assert f"{TINY_CELLS} cells, {TINY_CELLS} already done, 0 to run" in caplog.text
    assert "trained" not in caplog.text
    assert (run.grid_dir / "runs.jsonl").read_bytes() == runs_before
    assert cache_state(run) == cache_before

    (run.grid_dir / "table.md").unlink()
    (run.grid_dir / "summary.csv").unlink()
    assert main_in(["--grid", "tiny.yaml", "--render-only"], cwd=run.root) == 0
    assert (run.grid_dir / "table.md").read_text() == table_md
    assert (run.grid_dir / "summary.csv").read_text() == (
        finished_run.grid_dir / "summary.csv").read_text()
    assert (run.grid_dir / "runs.jsonl").read_bytes() == runs_before
    assert cache_state(run) == cache_before


# ---------------------------------------------------------------- kill and resume

# run_bench.py, except that it freezes itself (SIGSTOP) right after appending its N-th record
# to runs.jsonl, so the test kills it at a known point instead of after a guessed delay. One
# CPU as far as the CLI can tell: one cell at a time, one torch thread, as the finished run's
# workers had.
FREEZING_DRIVER = """\
import os
import signal
import sys

sys.path.insert(0, {repo!r})
os.cpu_count = lambda: 1

from bench.cli import main
from bench.harness import execute

_append = execute.append_record
_written = 0


def append_then_freeze(path, record):
    global _written
    _append(path, record)
    if path.name == "runs.jsonl":
        _written += 1
        if _written >= {count}:
            os.kill(os.getpid(), signal.SIGSTOP)


execute.append_record = append_then_freeze
sys.exit(main())
"""


def wait_for_records(path: Path, proc: subprocess.Popen, *, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before {count} record(s): "
                        f"{proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"fewer than {count} records in {path} after {timeout}s")


def comparable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if not k.startswith("time_s")} for row in rows]


@pytest.mark.parametrize("killed_after", [2])
def test_killed_run_resumes_without_duplicates(killed_after, finished_run, tmp_path, main_in,
                                               caplog):
    from helpers import REPO

    write_grid(tmp_path, TINY_GRID_YAML, "tiny.yaml")
    driver = tmp_path / "freezing_run_bench.py"
    driver.write_text(FREEZING_DRIVER.format(repo=str(REPO), count=killed_after))
    runs = tmp_path / "results" / "tiny" / "runs.jsonl"
    proc = start_cli(["--grid", "tiny.yaml", *OUT], cwd=tmp_path, driver=driver)
    try:
        wait_for_records(runs, proc, count=killed_after, timeout=240)
        # The whole process group, as a killed job. The run is frozen: nothing more is written.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert runs.read_bytes().count(b"\n") == killed_after

    assert main_in(["--grid", "tiny.yaml"], cwd=tmp_path) == 0
    assert (f"{TINY_CELLS} cells, {killed_after} already done, "
            f"{TINY_CELLS - killed_after} to run") in caplog.text
    assert "trained" not in caplog.text  # the original model came from the cache

    cells = [json.loads(line)["cell"] for line in runs.read_text().splitlines()]
    assert len(cells) == TINY_CELLS
    assert len(set(cells)) == len(cells)
    caplog.clear()
    assert main_in(["--grid", "tiny.yaml"], cwd=tmp_path) == 0  # nothing left to run
    assert f"{TINY_CELLS} already done, 0 to run" in caplog.text

    got = summary_rows(tmp_path / "results" / "tiny" / "summary.csv")
    want = summary_rows(finished_run.grid_dir / "summary.csv")
    assert [list(r)[:5] for r in got] == [list(r)[:5] for r in want]
    for g, w in zip(comparable(got), comparable(want)):
        for key in g:
            if key.endswith(("_mean", "_std")) and w[key]:
                assert float(g[key]) == pytest.approx(float(w[key]), abs=1e-3), key
            else:
                assert g[key] == w[key], key


# ---------------------------------------------------------------- a plugin, end to end


def test_plugin_method_runs_only_its_own_cells(finished_run, tmp_path, main_in, capsys,
                                                 clean_registry):
    run = finished_run.copy_to(tmp_path / "run")
    plugin = run.root / "zero_head.py"
    plugin.write_text(textwrap.dedent(ZERO_HEAD_PLUGIN))
    runs_before = (run.grid_dir / "runs.jsonl").read_bytes()
    cache_before = cache_state(run)
    args = ["--grid", "tiny.yaml", "--plugin", "zero_head.py", "--methods", "zero_head", *OUT]

    capsys.readouterr()
    assert main_in([*args, "--dry-run"], cwd=run.root) == 0  # in-process: the run below is not
    dry = capsys.readouterr().out.splitlines()
    lines = [line.split() for line in dry]
    assert [line[:2] for line in lines[:2]] == [["done", "digits/smallcnn/2/original/0"],
                                                ["todo", "digits/smallcnn/2/zero_head/0"]]
    assert lines[1][2] == "?"  # the plugin gives no cost estimate
    assert dry[2].startswith("2 cells, 1 to run: about 0 FLOP")
    assert dry[2].endswith("; 1 cells of unknown cost left out")
    assert len(dry) == 3

    result = run_cli(args, cwd=run.root)
    assert result.returncode == 0, result.stderr
    assert "1 already done, 1 to run" in result.stderr
    assert "trained" not in result.stderr
    assert cache_state(run) == cache_before  # the original was neither retrained nor rewritten

    after = (run.grid_dir / "runs.jsonl").read_bytes()
    assert after.startswith(runs_before)  # earlier records untouched
    new = [json.loads(line) for line in after[len(runs_before):].decode().splitlines()]
    assert [r["method"] for r in new] == ["zero_head"]
    original = next(r for r in records(run) if r["method"] == "original")
    assert new[0]["acc_forget_test"] == 0.0 and new[0]["acc_forget_train"] == 0.0
    assert new[0]["acc_retain_test"] == pytest.approx(original["acc_retain_test"])
    assert new[0]["params"] == {"bias": -1e4}

    summary = summary_rows(run.grid_dir / "summary.csv")
    assert [r["method"] for r in summary] == ["original", "finetune", "pbu", "zero_head"]
    assert "zero_head A_Df" in (run.grid_dir / "table.md").read_text()
    tex = (run.grid_dir / "table.tex").read_text()
    assert "zero_head" in tex or r"zero\_head" in tex
