"""Records -> per-(dataset, arch, classes, method) mean and std over seeds, with pandas."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from bench.data.registry import DATASETS
from bench.metrics import METRIC_NAMES
from bench.models import ARCHITECTURES
from methods import METHODS

KEYS = ["dataset", "arch", "forget_classes", "method"]
# Which code made a record (the tables' note lists them; summary.csv keeps its contract).
PROVENANCE = ["code_version", "git_commit"]
PAPER_ORDER = ["original", "retrain", "finetune", "fast_effective", "bad_teaching", "pbu"]

def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell; a cell recomputed under a new configuration keeps its latest record."""
    columns = [*KEYS, "seed", "cell", *PROVENANCE, "warnings", *METRIC_NAMES]
    rows = [{**{k: r.get(k) for k in columns}, "warnings": len(r.get("warnings") or [])}
            for r in records if "error" not in r]
    frame = pd.DataFrame(rows, columns=columns)
    frame["forget_classes"] = frame["forget_classes"].astype(str)
    # Records made before a metric existed lack it: NaN, so that means and tables still work.
    frame[list(METRIC_NAMES)] = frame[list(METRIC_NAMES)].astype(float)
    return frame.drop_duplicates("cell", keep="last").reset_index(drop=True)


def flagged(frame: pd.DataFrame) -> set[tuple[str, ...]]:
    """(dataset, arch, forget_classes, method) groups in which some record carries a warning
    (a collapse, say): the tables mark them instead of hiding them in a mean."""
    hit = frame[frame["warnings"] > 0]
    return {tuple(str(v) for v in row) for row in hit[KEYS].itertuples(index=False)}


def is_reference(method: str) -> bool:
    """A reference row (``logit_mask``): a registered method whose class sets ``reference``;
    tables label it through its registered label, figures hatch it."""
    return method in METHODS and bool(getattr(METHODS.get(method), "reference", False))


def method_order(methods: Iterable[str]) -> list[str]:
    """The paper's column order first, then any other methods alphabetically, then the
    reference rows."""
    present = set(methods)
    rest = sorted(present - set(PAPER_ORDER), key=lambda m: (is_reference(m), m))
    return [m for m in PAPER_ORDER if m in present] + rest


def _class_sort_key(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split("+"))


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``summary.csv`` table: ``n_seeds`` and ``<metric>_mean``/``<metric>_std`` (ddof=1)."""
    grouped = frame.groupby(KEYS, sort=False)[list(METRIC_NAMES)]
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
    """Display label of a method, dataset or architecture, as given at registration; a name
    that is not registered (a grid's variant label, say) is its own label."""
    if kind == "method" and value == "original":
        return "Initial"
    registry = {"method": METHODS, "dataset": DATASETS, "arch": ARCHITECTURES}[kind]
    return registry.label(value)
