"""Records -> per-(dataset, arch, classes, method) mean and std over seeds, with pandas."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from bench.metrics import METRICS

KEYS = ["dataset", "arch", "forget_classes", "method"]
PAPER_ORDER = ["original", "retrain", "finetune", "fast_effective", "bad_teaching", "pbu"]

METHOD_LABELS = {"original": "Initial", "retrain": "Re-training", "finetune": "Fine-tuning",
                 "fast_effective": "Fast-Effective", "bad_teaching": "Bad Teaching",
                 "pbu": "PBU", "pbu_official": "PBU (official)"}
DATASET_LABELS = {"digits": "Digits", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST",
                  "cifar100": "CIFAR-100", "food101": "Food-101"}
ARCH_LABELS = {"smallcnn": "SmallCNN", "allcnn": "All-CNN", "resnet18": "ResNet-18",
               "resnet34": "ResNet-34", "resnet50": "ResNet-50", "densenet121": "DenseNet-121",
               "convnext_tiny": "ConvNeXt-T", "convnext_large": "ConvNeXt-L"}


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell; a cell recomputed under a new configuration keeps its latest record."""
    rows = [{k: r[k] for k in (*KEYS, "seed", "cell", *METRICS)} for r in records
            if "error" not in r]
    frame = pd.DataFrame(rows, columns=[*KEYS, "seed", "cell", *METRICS])
    frame["forget_classes"] = frame["forget_classes"].astype(str)
    return frame.drop_duplicates("cell", keep="last").reset_index(drop=True)


def method_order(methods: Iterable[str]) -> list[str]:
    """The paper's column order first, then any other methods alphabetically."""
    present = set(methods)
    return [m for m in PAPER_ORDER if m in present] + sorted(present - set(PAPER_ORDER))


def _class_sort_key(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split("+"))


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``summary.csv`` table: ``n_seeds`` and ``<metric>_mean``/``<metric>_std`` (ddof=1)."""
    grouped = frame.groupby(KEYS, sort=False)[list(METRICS)]
    stats = grouped.agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "n_seeds", frame.groupby(KEYS, sort=False)["seed"].nunique())
    summary = stats.reset_index()
    order = {m: i for i, m in enumerate(method_order(summary["method"]))}
    summary = summary.assign(
        _m=summary["method"].map(order),
        _c=summary["forget_classes"].map(_class_sort_key),
    ).sort_values(["dataset", "arch", "_c", "_m"]).drop(columns=["_m", "_c"])
    return summary.reset_index(drop=True)


def label(kind: str, value: str) -> str:
    table = {"method": METHOD_LABELS, "dataset": DATASET_LABELS, "arch": ARCH_LABELS}[kind]
    return table.get(value, value)
