"""The shadow-model privacy table (``--shadows K``): ``shadows.csv`` and its block in
``table.md``, from the scores the grid's records carry (no model is loaded)."""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from bench.metrics.shadows import SHADOW_FIELD, seed_splits, shadow_metrics
from bench.metrics.spec import SHADOW_METRICS
from bench.report.aggregate import KEYS, label, method_order
from bench.report.tables import BETTER_MARK

log = logging.getLogger(__name__)

COLUMNS = [*KEYS, "K", *(m.name for m in SHADOW_METRICS), "notes"]


def _by_seed(records: list[dict[str, Any]], count: int) -> tuple[dict[int, dict], list[int]]:
    """(seed -> record with scores, for seeds 0..count-1; the seeds missing)."""
    found = {r["seed"]: r for r in records if SHADOW_FIELD in r and r["seed"] < count}
    return found, [s for s in range(count) if s not in found]


def _ratio(numerator: list[float], denominator: list[float]) -> float:
    return float(np.mean(numerator) / np.mean(denominator))


def _row(method: dict[int, dict], retrained: dict[int, dict], count: int) -> dict[str, Any]:
    """The metrics of one method against retraining, both complete over the seeds."""
    def scores(by_seed: dict[int, dict]) -> np.ndarray:
        return np.array([by_seed[s][SHADOW_FIELD]["forget_train_scores"] for s in range(count)])

    def values(by_seed: dict[int, dict], read) -> list[float]:
        return [read(by_seed[s]) for s in range(count)]

    result = shadow_metrics(method=scores(method), retrained=scores(retrained))
    notes = result.pop("notes")
    retain = _ratio(values(method, lambda r: r["acc_retain_test"]),
                    values(retrained, lambda r: r["acc_retain_test"]))
    test = _ratio(values(method, lambda r: r[SHADOW_FIELD]["acc_test"]),
                  values(retrained, lambda r: r[SHADOW_FIELD]["acc_test"]))
    return {**result, "final_score": result["forget_quality"] * retain * test,
            "notes": "; ".join(f"{k}: {v}" for k, v in notes.items())}


def shadow_table(records: list[dict[str, Any]], *, count: int) -> pd.DataFrame:
    """One row per (dataset, arch, forget classes, method) among ``records``: the shadow
    metrics over seeds 0..count-1, NaN with a note where a seed's record is missing."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        groups[tuple(str(record[k]) for k in KEYS)].append(record)
    rows = []
    for key, members in groups.items():
        method, method_missing = _by_seed(members, count)
        retrained, retrain_missing = _by_seed(groups.get((*key[:3], "retrain"), []), count)
        missing = [f"{who} lacks seeds {', '.join(map(str, seeds))}" for who, seeds in
                   ((key[3], method_missing), ("retrain", retrain_missing)) if seeds]
        if missing:
            values = {**{m.name: math.nan for m in SHADOW_METRICS},
                      "notes": "; ".join(missing) + " (with scores: rerun with --shadows)"}
        else:
            log.info("shadow analysis %s: %d seeds, %d models a side, U-LiRA over %d splits",
                     "/".join(key), count, count // 2, len(seed_splits(count)))
            values = _row(method, retrained, count)
        rows.append({**dict(zip(KEYS, key)), "K": count, **values})
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = {m: i for i, m in enumerate(method_order(table["method"]))}
    classes = table["forget_classes"].map(lambda c: tuple(int(x) for x in c.split("+")))
    return (table.assign(_c=classes, _m=table["method"].map(order))
            .sort_values(["dataset", "arch", "_c", "_m"]).drop(columns=["_c", "_m"])
            .reset_index(drop=True))


def _short(value: float) -> str:
    return "--" if math.isnan(value) else f"{value:.3g}"


def shadow_markdown(table: pd.DataFrame) -> str:
    """The block under the other tables; empty for an empty table."""
    if table.empty:
        return ""
    head = ["Dataset", "Model", "Classes", "Method"] + [
        f"{m.label} {BETTER_MARK[m.better]}" for m in SHADOW_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.itertuples(index=False):
        cells = [label("dataset", row.dataset), label("arch", row.arch),
                 f"Class-{row.forget_classes}", label("method", row.method),
                 *(_short(getattr(row, m.name)) for m in SHADOW_METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    legend = "; ".join(f"{m.label}: {m.description}" for m in SHADOW_METRICS)
    count = int(table["K"].iloc[0])
    return ("\n".join(lines) + f"\n\nShadow-model privacy over seeds 0-{count - 1} ({count} "
            "models of each method and of retraining, compared across disjoint seed halves; "
            f"U-LiRA's numbers are means over {len(seed_splits(count))} such splits; "
            "shadows.csv has the notes). Retraining's own row is the null: AUC ≈ 0.5, and the "
            f"highest F these {count // 2} models a side can show. {legend}.\n")
