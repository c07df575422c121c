"""``run_bench.py --backend dask --scheduler ADDRESS``: a grid's cells run on a Dask cluster's
workers and give the same summary as a serial run; a missing or unreachable scheduler is bad input.

The cluster is a local one (2 worker processes, 1 thread each) on the loopback interface.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_grid
from test_cli import assert_clean_bad_input, run_main

from bench import cli

# 2 seeds: the originals phase has two items, so it goes to the cluster too (one item runs here).
GRID_YAML = """\
name: dasky
seeds: [0, 1]
methods: [finetune]
experiments:
  - dataset: digits
    arch: smallcnn
    forget_classes: [[2]]
    train: {epochs: 2}
    method_params: {finetune: {epochs: 1, lr: 0.003}}
"""
CELLS = 4


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as local:
        yield local


def outputs(name: str) -> list[str]:
    return ["--results-dir", name, "--plots-dir", f"{name}_plots"]


def summary(results: Path) -> pd.DataFrame:
    frame = pd.read_csv(results / "dasky" / "summary.csv")
    return frame.drop(columns=[c for c in frame.columns if c.startswith("time_s")])


def datasets_loaded_by_workers(local) -> int:
    """Datasets the worker processes have loaded: nonzero only if cells ran there."""
    import distributed

    def loaded() -> int:  # runs in each worker (pickled by value)
        module = sys.modules.get("bench.runner")
        return module.cached_dataset.cache_info().misses if module else 0

    with distributed.Client(local) as client:
        return sum(client.run(loaded).values())


def test_dask_run_gives_the_serial_runs_summary(cluster, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="bench")
    write_grid(tmp_path, GRID_YAML, "dasky.yaml")
    monkeypatch.chdir(tmp_path)
    dask_args = ["--grid", "dasky.yaml", "--backend", "dask",
                 "--scheduler", cluster.scheduler_address, *outputs("dask")]

    assert cli.main(dask_args) == 0
    assert datasets_loaded_by_workers(cluster) > 0
    assert f"{CELLS} cells, 0 already done, {CELLS} to run" in caplog.text

    # One pending cell: a grid that is done but for one record still runs that cell.
    runs = tmp_path / "dask" / "dasky" / "runs.jsonl"
    lines = runs.read_text().splitlines(keepends=True)
    dropped = next(line for line in lines if json.loads(line)["method"] == "finetune")
    runs.write_text("".join(line for line in lines if line is not dropped))
    caplog.clear()
    assert cli.main(dask_args) == 0
    assert f"{CELLS - 1} already done, 1 to run" in caplog.text
    assert len(runs.read_text().splitlines()) == CELLS

    # A serial run gives each cell cpu_count // jobs torch threads; 2 threads already change
    # a few predictions (the sums are split differently), so it gets the workers' 1 thread.
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert cli.main(["--grid", "dasky.yaml", "--jobs", "1", *outputs("serial")]) == 0

    # Exact equality: seeds are fixed and one-thread CPU arithmetic is deterministic, wherever a
    # cell runs; the mean and std of two seeds do not depend on the order records arrived in.
    pd.testing.assert_frame_equal(summary(tmp_path / "dask"), summary(tmp_path / "serial"),
                                  check_exact=True)
    assert len(summary(tmp_path / "serial")) == 2  # original and finetune


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", ["no-scheduler", "scheduler-without-dask", "unreachable",
                                  "not-installed"])
def test_dask_bad_input_returns_2_with_one_line_and_writes_nothing(case, tmp_path, capsys,
                                                                  monkeypatch):
    files = {"dasky.yaml": GRID_YAML}
    address = f"tcp://127.0.0.1:{closed_port()}"
    args, must_name = {
        "no-scheduler": (["--backend", "dask"], "--scheduler"),
        "scheduler-without-dask": (["--scheduler", address], "--backend dask"),
        "unreachable": (["--backend", "dask", "--scheduler", address], address),
        "not-installed": (["--backend", "dask", "--scheduler", address], "pip install -e '.[dask]'"),
    }[case]
    timeout = contextlib.nullcontext()
    if case == "unreachable":
        pytest.importorskip("distributed")
        import dask
        # dask retries a refused connection until this timeout (30 s by default).
        timeout = dask.config.set({"distributed.comm.timeouts.connect": "2s"})
    if case == "not-installed":
        monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if absent
    with timeout:
        outcome = run_main(tmp_path / "case", files, ["--grid", "dasky.yaml", *args], capsys,
                           monkeypatch)
    assert_clean_bad_input(outcome, must_name)
