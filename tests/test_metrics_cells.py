"""The metrics beyond the paper inside the harness: records, the retrain reference, rendering."""
from __future__ import annotations

import json
import math

import pandas as pd
from helpers import find_cell

from bench.harness import execute
from bench.harness.cache import ModelCache
from bench.harness.cells import unlearned_key
from bench.metrics import EXTENDED_METRICS
from bench.report.aggregate import records_frame, summarize
from bench.report.tables import extended_markdown_table


def test_a_tiny_grid_writes_the_new_summary_columns_and_figures(finished_run):
    summary = pd.read_csv(finished_run.grid_dir / "summary.csv")
    for name in EXTENDED_METRICS:
        assert f"{name}_mean" in summary.columns and f"{name}_std" in summary.columns
    # The paper's columns keep their place, the new ones come after them.
    assert list(summary.columns[:5]) == ["dataset", "arch", "forget_classes", "method",
                                         "n_seeds"]
    assert summary.columns.get_loc("time_s_std") < summary.columns.get_loc(
        "forget_mia_auc_mean")
    original = summary[summary["method"] == "original"].iloc[0]
    assert original["relearn_steps_mean"] == 0
    assert original["weight_distance_mean"] > 0   # against the retrained model, not itself
    assert 0 <= original["probe_forget_acc_mean"] <= 100
    assert "Probe" in (finished_run.grid_dir / "table.md").read_text()
    plots = finished_run.plots / "tiny"
    for stem in ("privacy_roc", "privacy_probe"):
        for suffix in (".png", ".pdf"):
            assert (plots / f"{stem}{suffix}").stat().st_size > 0
    # The trade-off is measured against the retrain rows, which this grid does not run.
    assert not (plots / "privacy_tradeoff.png").exists()
    records = [json.loads(line) for line in (finished_run.grid_dir / "runs.jsonl").open()]
    for record in records:
        groups = {k for k in record["timings"] if k.startswith("metric_")}
        assert {"metric_attack_s", "metric_distance_s", "metric_probe_s"} <= groups
        assert record["metric_settings"]["probe"]["n"] > 0
        assert len(record["forget_mia_roc"]["fpr"]) == len(record["forget_mia_roc"]["tpr"])
        # Digits' forget-test class holds ~50 samples: no TPR at low FPR, and the reason.
        assert math.isnan(record["forget_mia_tpr_1fpr"])
        assert "non-members" in record["metric_notes"]["forget_mia_tpr_1fpr"]


def test_retraining_is_the_reference_trained_once_and_scores_0_against_itself(unit_grid,
                                                                             run_cfg, original):
    retrain = find_cell(unit_grid, "retrain")
    finetune = execute.run_cell(find_cell(unit_grid, "finetune"), run_cfg, curves=False)
    assert "error" not in finetune, finetune.get("traceback")
    # The finetune cell trained the retrain cell's own cache entry.
    cell, _ = execute.with_data(retrain, run_cfg)
    assert ModelCache(run_cfg.cache_dir).path(unlearned_key(cell)).exists()
    assert finetune["weight_distance"] > 0 and finetune["js_forget"] > 0
    record = execute.run_cell(retrain, run_cfg, curves=False)
    assert "error" not in record, record.get("traceback")
    for name in ("js_forget", "js_retain", "activation_distance", "weight_distance"):
        assert record[name] == 0.0, name
    assert 0.3 < record["forget_mia_auc"] < 0.7


def test_records_made_before_the_new_metrics_still_render():
    old = {"dataset": "digits", "arch": "smallcnn", "forget_classes": "2", "method": "pbu",
           "seed": 0, "cell": "c0", "code_version": "x", "git_commit": "y", "warnings": [],
           "acc_forget_test": 1.0, "acc_retain_test": 99.0, "acc_forget_train": 0.0,
           "acc_retain_train": 99.0, "mia": 0.0, "time_s": 0.5}
    summary = summarize(records_frame([old]))
    assert summary["probe_forget_acc_mean"].isna().all()
    assert summary["acc_retain_test_mean"].iloc[0] == 99.0
    assert extended_markdown_table(summary) == ""   # no block without any of its metrics
