"""Records -> summary: mean and sample std over seeds per (dataset, arch, classes, method)."""
from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest
from helpers import PAPER_METHODS

from bench.harness.cells import current_records, grid_cells
from bench.harness.grid import Grid, parse_grid
from bench.harness.store import append_record
from bench.metrics import EXTENDED_METRICS, METRIC_NAMES
from bench.report.aggregate import method_order, records_frame, summarize
from bench.report.render import render

SUMMARY_COLUMNS = [
    "dataset", "arch", "forget_classes", "method", "n_seeds",
    "acc_forget_test_mean", "acc_forget_test_std", "acc_retain_test_mean", "acc_retain_test_std",
    "acc_forget_train_mean", "acc_forget_train_std", "acc_retain_train_mean",
    "acc_retain_train_std", "mia_mean", "mia_std", "time_s_mean", "time_s_std",
]
# The metrics beyond the paper come after the contract's columns, which keep their order.
EXTENDED_COLUMNS = [f"{name}_{stat}" for name in EXTENDED_METRICS for stat in ("mean", "std")]
PAPER_ORDER = ["original", *PAPER_METHODS]


def record(method: str, seed: int, *, classes: str = "2", dataset: str = "digits",
           arch: str = "smallcnn", **metrics: float) -> dict:
    """A stored record; metrics not given get distinct, deterministic values."""
    values = {m: 10.0 * i + seed + 0.25 for i, m in enumerate(METRIC_NAMES)}
    values.update(metrics)
    return {"cell": f"{dataset}/{arch}/{classes}/{method}/{seed}", "dataset": dataset,
            "arch": arch, "forget_classes": classes, "method": method, "seed": seed,
            "params": {}, **values}


def summary_row(summary: pd.DataFrame, method: str, classes: str = "2", **keys) -> pd.Series:
    mask = (summary["method"] == method) & (summary["forget_classes"] == classes)
    for key, value in keys.items():
        mask &= summary[key] == value
    rows = summary[mask]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_mean_and_sample_std_per_metric():
    rng = np.random.default_rng(0)
    values = {m: rng.uniform(0, 100, size=3) for m in METRIC_NAMES}
    records = [record("finetune", s, **{m: float(values[m][s]) for m in METRIC_NAMES})
               for s in range(3)]
    row = summary_row(summarize(records_frame(records)), "finetune")
    assert row["n_seeds"] == 3
    for metric in METRIC_NAMES:
        assert row[f"{metric}_mean"] == pytest.approx(np.mean(values[metric]), abs=1e-12)
        assert row[f"{metric}_std"] == pytest.approx(np.std(values[metric], ddof=1), abs=1e-12)


def test_known_values_give_known_mean_and_std():
    records = [record("pbu", s, acc_forget_test=v) for s, v in enumerate([1.0, 2.0, 6.0])]
    row = summary_row(summarize(records_frame(records)), "pbu")
    assert row["acc_forget_test_mean"] == pytest.approx(3.0)
    assert row["acc_forget_test_std"] == pytest.approx(math.sqrt(7.0))  # ddof=1, not sqrt(14/3)


def test_single_seed_has_undefined_std():
    row = summary_row(summarize(records_frame([record("pbu", 0)])), "pbu")
    assert row["n_seeds"] == 1
    assert math.isnan(row["acc_forget_test_std"])


def test_summary_columns_are_exactly_the_contract():
    summary = summarize(records_frame([record("pbu", 0), record("original", 0)]))
    assert list(summary.columns) == SUMMARY_COLUMNS + EXTENDED_COLUMNS


def test_groups_do_not_mix():
    records = [record("pbu", 0, classes="2", acc_forget_test=1.0),
               record("pbu", 0, classes="6", acc_forget_test=2.0),
               record("pbu", 0, classes="2+6", acc_forget_test=3.0),
               record("pbu", 0, classes="2", arch="resnet18", acc_forget_test=4.0),
               record("pbu", 0, classes="2", dataset="mnist", acc_forget_test=5.0)]
    summary = summarize(records_frame(records))
    assert len(summary) == 5
    assert (summary["n_seeds"] == 1).all()
    assert summary_row(summary, "pbu", "2", dataset="digits", arch="smallcnn")[
        "acc_forget_test_mean"] == 1.0
    assert summary_row(summary, "pbu", "2+6")["acc_forget_test_mean"] == 3.0
    assert summary_row(summary, "pbu", "2", arch="resnet18")["acc_forget_test_mean"] == 4.0
    assert summary_row(summary, "pbu", "2", dataset="mnist")["acc_forget_test_mean"] == 5.0


def test_forget_classes_sorted_numerically():
    records = [record("pbu", 0, classes=c) for c in ("10", "6", "2+6", "2")]
    summary = summarize(records_frame(records))
    assert list(summary["forget_classes"]) == ["2", "2+6", "6", "10"]


def test_duplicate_cell_keeps_the_last_record():
    records = [record("pbu", 0, acc_forget_test=50.0), record("pbu", 1, acc_forget_test=10.0),
               record("pbu", 0, acc_forget_test=20.0)]
    frame = records_frame(records)
    assert len(frame) == 2
    row = summary_row(summarize(frame), "pbu")
    assert row["n_seeds"] == 2
    assert row["acc_forget_test_mean"] == pytest.approx(15.0)


def test_error_records_are_ignored():
    failed = {"cell": "digits/smallcnn/2/pbu/1", "dataset": "digits", "arch": "smallcnn",
              "forget_classes": "2", "method": "pbu", "seed": 1,
              "error": "FloatingPointError: PBU loss is nan"}
    only_failed = {**failed, "cell": "digits/smallcnn/2/broken/0", "method": "broken"}
    summary = summarize(records_frame([record("pbu", 0), failed, only_failed]))
    assert list(summary["method"]) == ["pbu"]
    assert summary_row(summary, "pbu")["n_seeds"] == 1


def test_method_order_is_the_papers_then_the_rest_alphabetically():
    methods = ["zzz_plugin", "pbu", "pbu_official", "bad_teaching", "aaa_plugin", "original",
               "fast_effective", "finetune", "retrain"]
    expected = [*PAPER_ORDER, "aaa_plugin", "pbu_official", "zzz_plugin"]
    assert method_order(methods) == expected
    assert method_order(["pbu", "original"]) == ["original", "pbu"]
    summary = summarize(records_frame([record(m, 0) for m in methods]))
    assert list(summary["method"]) == expected


def _render_grid() -> Grid:
    return parse_grid({"name": "g", "seeds": [0, 1], "methods": ["pbu"],
                       "experiments": [{"dataset": "digits", "arch": "smallcnn",
                                        "forget_classes": [[2], [2, 6]]}]})


def _current_record(cell) -> dict:
    """A stored record that the grid's cell accepts as current (no data fingerprint known)."""
    return {**record(cell.label, cell.seed, classes=cell.classes_text),
            "config_hash": cell.config_hash, "code_version": cell.code_version,
            "git_commit": "abc"}


def test_render_writes_the_summary_csv_tables_and_figures(tmp_path):
    results, plots = tmp_path / "results", tmp_path / "plots"
    (results / "g").mkdir(parents=True)
    grid = _render_grid()
    for cell in grid_cells(grid):
        append_record(results / "g" / "runs.jsonl", _current_record(cell))
    written = render(grid, results_dir=results, plots_dir=plots)
    names = {p.name for p in written}
    assert {"summary.csv", "table.md", "table.tex"} <= names
    assert {"accuracy.png", "accuracy.pdf", "time.png", "time.pdf"} <= names
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    assert {p.parent for p in written if p.suffix in (".png", ".pdf")} == {plots / "g"}

    with (results / "g" / "summary.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == SUMMARY_COLUMNS + EXTENDED_COLUMNS
    assert [(r[2], r[3], r[4]) for r in rows[1:]] == [
        ("2", "original", "2"), ("2", "pbu", "2"), ("2+6", "original", "2"), ("2+6", "pbu", "2")]
    assert float(rows[1][5]) == pytest.approx(np.mean([0.25, 1.25]), abs=1e-4)
    assert not list((results / "g").glob(".*.tmp"))


def test_render_leaves_out_stale_records(tmp_path):
    results, plots = tmp_path / "results", tmp_path / "plots"
    (results / "g").mkdir(parents=True)
    grid = _render_grid()
    for cell in grid_cells(grid):
        current = _current_record(cell)
        append_record(results / "g" / "runs.jsonl", current)
        # The same cell made by other code: never averaged in, whatever its order.
        append_record(results / "g" / "runs.jsonl",
                      {**current, "config_hash": "other", "acc_forget_test": 1e6})
    render(grid, results_dir=results, plots_dir=plots)
    summary = pd.read_csv(results / "g" / "summary.csv")
    assert summary["acc_forget_test_mean"].max() < 1e3
    assert set(summary["n_seeds"]) == {2}


def test_a_method_the_grid_runs_is_judged_by_the_grid_cells_alone():
    """Records of the grid's methods at seeds it no longer runs, made under another setting,
    were once judged by their own params and averaged with the current setting's."""
    grid = _render_grid()
    wider = parse_grid({"name": "g", "seeds": [0, 1, 2], "methods": ["pbu"],
                        "experiments": [{"dataset": "digits", "arch": "smallcnn",
                                         "forget_classes": [[2], [2, 6]],
                                         "method_params": {"pbu": {"lr": 3e-4}}}]})
    records = [{**_current_record(c), "params": dict(c.params), "registered_method": c.method}
               for c in grid_cells(wider)]
    current, stale = current_records(grid, records)
    # Only the originals of seeds 0 and 1 are the grid's own cells as it states them now.
    assert sorted(current) == sorted(c.key for c in grid_cells(grid) if c.label == "original")
    assert stale == len(records) - 4


def test_render_without_records_writes_nothing(tmp_path):
    grid = _render_grid()
    assert render(grid, results_dir=tmp_path / "r", plots_dir=tmp_path / "p") == []
    assert not (tmp_path / "r").exists() and not (tmp_path / "p").exists()
