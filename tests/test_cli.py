"""``python run_bench.py``: bad input, dry runs, resuming, re-rendering and plugins, end to end.

The grids here are tiny (digits, smallcnn, 3 epochs, one class, one seed); see conftest.py.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import (
    TINY_CELLS,
    TINY_GRID_YAML,
    FinishedRun,
    run_cli,
    start_cli,
    write_grid,
)

from bench import grids
from bench.errors import BenchInputError

OUT = ["--results-dir", "results", "--plots-dir", "plots"]
PAPER_METHODS = ["retrain", "finetune", "fast_effective", "bad_teaching", "pbu"]

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


def grid_yaml(**experiment) -> str:
    """A one-experiment grid file; keyword arguments replace the experiment's fields."""
    fields = {"dataset": "digits", "arch": "smallcnn", "forget_classes": "[[2]]",
              "train": "{epochs: 1}", **experiment}
    body = "\n".join(f"    {key}: {value}" for key, value in fields.items())
    return f"name: bad\nseeds: [0]\nmethods: [finetune]\nexperiments:\n  - {body.lstrip()}\n"


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def records(run: FinishedRun) -> list[dict]:
    lines = (run.grid_dir / "runs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def summary_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def cache_state(run: FinishedRun) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (run.results / ".model_cache").iterdir()}


# ---------------------------------------------------------------- bad input

# name -> (files to create: {relative path: text or None for a folder}, arguments, must name)
BAD_INPUTS = {
    "unknown-grid": ({}, ["--grid", "nope_grid"], "nope_grid"),
    "unknown-method-flag": ({"g.yaml": grid_yaml()}, ["--grid", "g.yaml", "--methods", "nope"],
                            "'nope'"),
    "unknown-method-yaml": ({"g.yaml": grid_yaml().replace("[finetune]", "[finetune, nope_m]")},
                            ["--grid", "g.yaml"], "nope_m"),
    "unknown-dataset": ({"g.yaml": grid_yaml(dataset="nope_data")}, ["--grid", "g.yaml"],
                        "nope_data"),
    "unknown-arch": ({"g.yaml": grid_yaml(arch="nope_net")}, ["--grid", "g.yaml"], "nope_net"),
    "forget-class-10": ({"g.yaml": grid_yaml(forget_classes="[[2], [10]]")},
                        ["--grid", "g.yaml"], "10"),
    "classes-flag-10": ({"g.yaml": grid_yaml()}, ["--grid", "g.yaml", "--classes", "2,10"], "10"),
    "unknown-train-setting": ({"g.yaml": grid_yaml(train="{epochz: 3}")}, ["--grid", "g.yaml"],
                              "epochz"),
    "unknown-method-param": ({"g.yaml": grid_yaml(method_params="{finetune: {lrr: 1}}")},
                             ["--grid", "g.yaml"], "lrr"),
    "invalid-yaml": ({"broken.yaml": "name: x\nexperiments: [\n"}, ["--grid", "broken.yaml"],
                     "broken.yaml"),
    "yaml-not-a-mapping": ({"list.yaml": "- 1\n- 2\n"}, ["--grid", "list.yaml"], "mapping"),
    "unreadable-yaml": ({"folder.yaml": None}, ["--grid", "folder.yaml"], "folder.yaml"),
    "missing-yaml": ({}, ["--grid", "missing.yaml"], "missing.yaml"),
    "missing-dataset-files": ({"g.yaml": grid_yaml(dataset="mnist"), "empty": None},
                              ["--grid", "g.yaml", "--data-root", "empty"], "mnist"),
    "plugin-raises": ({"boom_plugin.py": "raise RuntimeError('boom')\n"},
                      ["--plugin", "boom_plugin.py"], "boom_plugin.py"),
    "missing-plugin": ({}, ["--plugin", "nowhere_plugin.py"], "nowhere_plugin.py"),
    "device-cuda": ({}, ["--device", "cuda"], "cuda"),
    "device-unknown": ({}, ["--device", "tpu"], "tpu"),
    "seeds-not-numbers": ({}, ["--seeds", "abc"], "abc"),
    "seeds-zero-count": ({}, ["--seeds", "0"], "'0'"),
    "jobs-zero": ({}, ["--jobs", "0"], "--jobs"),
    "unknown-flag": ({}, ["--frobnicate"], "--frobnicate"),
}
NOT_UTF8 = ({"latin.yaml": b"name: caf\xe9\nexperiments: []\n"}, ["--grid", "latin.yaml"],
            "latin.yaml")
# The cases also run as real subprocesses (each costs an interpreter start, ~4 s of CPU);
# all cases run in-process through bench.cli.main, which is the same code minus the start-up.
SUBPROCESS_CASES = ["unknown-grid", "unknown-method-flag", "unknown-dataset", "unknown-arch",
                    "forget-class-10", "invalid-yaml", "unreadable-yaml", "missing-yaml",
                    "plugin-raises", "device-cuda", "seeds-not-numbers"]


def make_case(folder: Path, files: dict) -> set[str]:
    """Create the case's files (None = a folder); returns the folder's listing."""
    folder.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = folder / rel
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return tree(folder)


def _run_bad_input(folder: Path, files: dict, args: list[str]):
    before = make_case(folder, files)
    result = run_cli([*args, *OUT], cwd=folder)
    return result.returncode, result.stderr, before, tree(folder)


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """The subprocess cases, two at a time (each is mostly interpreter start-up)."""
    root = tmp_path_factory.mktemp("bad_input")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_run_bad_input, root / name, *BAD_INPUTS[name][:2])
                   for name in SUBPROCESS_CASES}
        return {name: future.result() for name, future in futures.items()}


def run_main(folder: Path, files: dict, args: list[str], capsys, monkeypatch):
    """``bench.cli.main`` in-process, in ``folder``; same shape as ``_run_bad_input``."""
    from bench import cli

    before = make_case(folder, files)
    monkeypatch.chdir(folder)
    capsys.readouterr()
    returncode = cli.main([*args, *OUT])
    return returncode, capsys.readouterr().err, before, tree(folder)


def assert_clean_bad_input(outcome, must_name: str) -> None:
    returncode, stderr, before, after = outcome
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == 2, (returncode, stderr[-2000:])
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert must_name in lines[0], stderr
    assert lines[0].startswith("run_bench.py: error: ")
    assert after == before, f"files written: {sorted(after - before)}"
    assert "results" not in after and "plots" not in after


def skip_cuda_case_on_gpu(case: str) -> None:
    if case == "device-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_process_exits_2_with_one_line_and_writes_nothing(case, bad_input_runs):
    skip_cuda_case_on_gpu(case)
    assert_clean_bad_input(bad_input_runs[case], BAD_INPUTS[case][2])


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_main_returns_2_with_one_line_and_writes_nothing(case, tmp_path, capsys,
                                                                  monkeypatch, clean_registry):
    skip_cuda_case_on_gpu(case)
    files, args, must_name = BAD_INPUTS[case]
    assert_clean_bad_input(run_main(tmp_path / "case", files, args, capsys, monkeypatch),
                           must_name)


def test_non_utf8_grid_file_is_bad_input(tmp_path, capsys, monkeypatch):
    files, args, must_name = NOT_UTF8
    assert_clean_bad_input(run_main(tmp_path / "case", files, args, capsys, monkeypatch),
                           must_name)


@pytest.mark.parametrize("where", ["method_params", "train"])
def test_yaml_exponent_without_dot_is_a_number_or_bad_input(where, tmp_path):
    field = ({"method_params": "{finetune: {lr: 3e-3}}"} if where == "method_params"
             else {"train": "{epochs: 1, lr: 3e-3}"})
    path = write_grid(tmp_path, grid_yaml(**field))
    try:
        grid = grids.load_grid(str(path))
    except BenchInputError as exc:
        assert "3e-3" in str(exc)
        return
    exp = grid.experiments[0]
    lr = (grids.resolve_params(grid, exp, "finetune")["lr"] if where == "method_params"
          else exp.train.lr)
    assert isinstance(lr, float) and lr == pytest.approx(0.003)


def test_invalid_method_parameter_value_is_bad_input(tmp_path):
    path = write_grid(tmp_path, grid_yaml(method_params="{pbu: {batchnorm: frozen}}")
                      .replace("[finetune]", "[pbu]"))
    with pytest.raises(BenchInputError, match="frozen"):
        grids.load_grid(str(path))


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


def test_dry_run_of_a_finished_grid_shows_all_done(finished_run, tmp_path):
    run = finished_run.copy_to(tmp_path / "run")
    before = tree(run.root)
    result = run_cli(["--grid", "tiny.yaml", "--dry-run", *OUT], cwd=run.root)
    assert result.stdout.splitlines()[-1].startswith(f"{TINY_CELLS} cells, 0 to run: about 0 FLOP")
    assert all(line.startswith("done  ") for line in result.stdout.splitlines()[:-1])
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


def test_second_run_computes_nothing_and_render_only_restores_tables(finished_run, tmp_path):
    run = finished_run.copy_to(tmp_path / "run")
    runs_before = (run.grid_dir / "runs.jsonl").read_bytes()
    table_md = (run.grid_dir / "table.md").read_text()
    cache_before = cache_state(run)

    again = run_cli(["--grid", "tiny.yaml", *OUT], cwd=run.root)
    assert again.returncode == 0, again.stderr
    assert f"{TINY_CELLS} cells, {TINY_CELLS} already done, 0 to run" in again.stderr
    assert "trained" not in again.stderr
    assert (run.grid_dir / "runs.jsonl").read_bytes() == runs_before
    assert cache_state(run) == cache_before

    (run.grid_dir / "table.md").unlink()
    (run.grid_dir / "summary.csv").unlink()
    rendered = run_cli(["--grid", "tiny.yaml", "--render-only", *OUT], cwd=run.root)
    assert rendered.returncode == 0, rendered.stderr
    assert (run.grid_dir / "table.md").read_text() == table_md
    assert (run.grid_dir / "summary.csv").read_text() == (
        finished_run.grid_dir / "summary.csv").read_text()
    assert (run.grid_dir / "runs.jsonl").read_bytes() == runs_before
    assert cache_state(run) == cache_before


# ---------------------------------------------------------------- kill and resume


def wait_for_records(path: Path, proc: subprocess.Popen, *, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before {count} record(s): "
                        f"{proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no record in {path} after {timeout}s")


def comparable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if not k.startswith("time_s")} for row in rows]


def test_killed_run_resumes_without_duplicates(finished_run, tmp_path):
    write_grid(tmp_path, TINY_GRID_YAML, "tiny.yaml")
    runs = tmp_path / "results" / "tiny" / "runs.jsonl"
    proc = start_cli(["--grid", "tiny.yaml", *OUT], cwd=tmp_path)
    try:
        wait_for_records(runs, proc, count=1, timeout=180)
        # The whole process group: run_bench.py and its joblib workers, as a killed job.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_with = runs.read_bytes().count(b"\n")
    assert 1 <= killed_with < TINY_CELLS, "the kill came too late to interrupt the grid"

    resumed = run_cli(["--grid", "tiny.yaml", *OUT], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{killed_with} already done, {TINY_CELLS - killed_with} to run" in resumed.stderr
    assert "trained" not in resumed.stderr  # the original model came from the cache

    dry = run_cli(["--grid", "tiny.yaml", "--dry-run", *OUT], cwd=tmp_path)
    expected = int(dry.stdout.splitlines()[-1].split()[0])
    cells = [json.loads(line)["cell"] for line in runs.read_text().splitlines()]
    assert len(cells) == expected == TINY_CELLS
    assert len(set(cells)) == len(cells)

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


def test_plugin_method_runs_only_its_own_cells(finished_run, tmp_path):
    run = finished_run.copy_to(tmp_path / "run")
    plugin = run.root / "zero_head.py"
    plugin.write_text(textwrap.dedent(ZERO_HEAD_PLUGIN))
    runs_before = (run.grid_dir / "runs.jsonl").read_bytes()
    cache_before = cache_state(run)
    args = ["--grid", "tiny.yaml", "--plugin", "zero_head.py", "--methods", "zero_head", *OUT]

    dry = run_cli([*args, "--dry-run"], cwd=run.root)
    assert dry.returncode == 0, dry.stderr
    lines = [line.split() for line in dry.stdout.splitlines()]
    assert [line[:2] for line in lines[:2]] == [["done", "digits/smallcnn/2/original/0"],
                                                ["todo", "digits/smallcnn/2/zero_head/0"]]
    assert lines[1][2] == "?"  # the plugin gives no cost estimate
    assert dry.stdout.splitlines()[2].startswith("2 cells, 1 to run: about 0 FLOP")
    assert dry.stdout.splitlines()[2].endswith("; 1 cells of unknown cost left out")

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
