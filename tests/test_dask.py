"""``run_bench.py --backend dask --scheduler ADDRESS``: a grid's cells run on a Dask cluster's
workers and give the same summary as a serial run; a missing or unreachable scheduler is bad input.

The end-to-end test (slow) uses a local cluster of 2 worker processes, 1 thread each, on the
loopback interface; the fast tests use an in-process cluster of 2 single-thread workers. Cells
running in two threads of one process share torch's global seed, so only worker processes (the
README's ``--nthreads 1`` workers) give the serial run's numbers exactly.
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
from helpers import assert_clean_bad_input, run_main, write_grid

from bench import cli
from bench.harness import execute
from bench.harness.config import RunConfig
from bench.harness.parallel import dask_client, spread

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
        module = sys.modules.get("bench.harness.execute")
        return module.cached_dataset.cache_info().misses if module else 0

    with distributed.Client(local) as client:
        return sum(client.run(loaded).values())


# ~100 s (worker processes start and import torch). In the default run,
# test_cli_dask_backend_on_in_process_workers_matches_a_serial_run covers the same path with
# in-process workers and test_spread_runs_every_item_on_the_dask_workers the dispatch.
@pytest.mark.slow
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


@pytest.fixture(scope="module")
def threads_cluster():
    """Two single-thread workers inside this process: starts in about a second."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as local:
        yield local


def where_it_ran(item: int, cfg: RunConfig) -> tuple[int, str | None, str]:
    """(item, the Dask worker's address or None, the config's backend)."""
    from distributed import get_worker

    try:
        worker = get_worker().address
    except ValueError:  # not on a worker
        worker = None
    return item, worker, cfg.backend


def test_spread_runs_every_item_on_the_dask_workers(threads_cluster, tmp_path):
    cfg = RunConfig(results_dir=tmp_path, cache_dir=tmp_path, jobs=2, backend="dask",
                    scheduler=threads_cluster.scheduler_address)
    results = list(spread(where_it_ran, [(i,) for i in range(6)], cfg))
    assert sorted(item for item, _, _ in results) == list(range(6))  # each once, any order
    workers = {w.address for w in threads_cluster.workers.values()}
    assert {worker for _, worker, _ in results} <= workers
    assert None not in {worker for _, worker, _ in results}
    assert {backend for _, _, backend in results} == {"dask"}


def test_spread_with_one_job_runs_here_in_order(tmp_path):
    cfg = RunConfig(results_dir=tmp_path, cache_dir=tmp_path, jobs=1, backend="dask",
                    scheduler="tcp://127.0.0.1:1")  # never contacted
    assert list(spread(where_it_ran, [(i,) for i in range(3)], cfg)) == [
        (0, None, "dask"), (1, None, "dask"), (2, None, "dask")]


def test_dask_client_connects_and_reports_the_workers(threads_cluster):
    with dask_client(threads_cluster.scheduler_address) as client:
        assert client.nthreads() == {w.address: 1 for w in threads_cluster.workers.values()}
        assert len(client.nthreads()) == 2


# Where phase one (train_original) and phase two (run_cell) ran: Dask serialises the task
# functions, so the record is a module global (pickled by reference), not a closure's list.
RAN_ON: dict[str, list[str]] = {"originals": [], "cells": []}
_TRAIN_ORIGINAL, _RUN_CELL = execute.train_original, execute.run_cell


def _worker_address() -> str:
    from distributed import get_worker

    return get_worker().address  # raises ValueError off the workers


def recording_train_original(*args, **kwargs):
    RAN_ON["originals"].append(_worker_address())
    return _TRAIN_ORIGINAL(*args, **kwargs)


def recording_run_cell(*args, **kwargs):
    RAN_ON["cells"].append(_worker_address())
    return _RUN_CELL(*args, **kwargs)


def test_cli_dask_backend_runs_originals_and_cells_on_the_workers(threads_cluster, tmp_path,
                                                                  monkeypatch, caplog):
    """The CLI path of ``--backend dask`` (connect, originals and cells on the workers, records,
    render) against workers in this process. Their numbers are not compared with a serial run
    (see the module docstring); the slow test above does that with worker processes."""
    for calls in RAN_ON.values():
        calls.clear()
    monkeypatch.setattr(execute, "train_original", recording_train_original)
    monkeypatch.setattr(execute, "run_cell", recording_run_cell)
    caplog.set_level(logging.INFO, logger="bench")
    write_grid(tmp_path, GRID_YAML.replace("epochs: 2", "epochs: 1"), "dasky.yaml")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--grid", "dasky.yaml", "--backend", "dask", "--scheduler",
                     threads_cluster.scheduler_address, *outputs("dask")]) == 0
    assert "2 workers, 2 threads" in caplog.text
    assert f"{CELLS} cells, 0 already done, {CELLS} to run" in caplog.text
    workers = {w.address for w in threads_cluster.workers.values()}
    assert len(RAN_ON["originals"]) == 2 and set(RAN_ON["originals"]) <= workers
    assert len(RAN_ON["cells"]) == CELLS and set(RAN_ON["cells"]) <= workers
    records = [json.loads(line) for line in
               (tmp_path / "dask" / "dasky" / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["cell"] for r in records) == sorted(
        f"digits/smallcnn/2/{m}/{s}" for m in ("original", "finetune") for s in (0, 1))
    assert len(summary(tmp_path / "dask")) == 2


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
