"""Figures of the metrics beyond the paper: per-example attack ROC curves, the utility/forgetting
trade-off against retraining, and linear-probe recovery. Read from records alone (each record
stores its ROC curve), one panel per dataset and model, legends outside the axes so that 18
methods stay readable.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from bench.metrics import metric
from bench.report.aggregate import is_reference, label, method_order
from bench.report.figures import pyplot, save_figure

PANEL = ["dataset", "arch"]
MARKERS = "os^vD<>pP*Xhd"


def _panel_title(dataset: str, arch: str) -> str:
    return f"{label('dataset', dataset)} / {label('arch', arch)}"


def _styles(methods: list[str]) -> dict[str, dict]:
    """A colour and a marker per method (tab20 holds 20 colours), reference rows dashed."""
    import seaborn as sns

    colours = sns.color_palette("tab20", max(len(methods), 1))
    markers = itertools.cycle(MARKERS)
    return {m: {"color": colours[i], "marker": next(markers),
                "linestyle": "--" if is_reference(m) else "-"}
            for i, m in enumerate(methods)}


def _panels(frame: pd.DataFrame, *, width: float = 5.0, height: float = 3.8):
    """(figure, [(dataset, arch, axes)]): one axes per dataset/model, in a row."""
    plt = pyplot()
    keys = list(frame.groupby(PANEL, sort=False).groups)
    fig, axes = plt.subplots(1, len(keys), figsize=(width * len(keys), height), squeeze=False)
    return fig, [(d, a, ax) for (d, a), ax in zip(keys, axes[0])]


def _legend_outside(fig, axes) -> None:
    handles, labels = axes.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               fontsize=8)


def roc_frame(records: list[dict]) -> pd.DataFrame:
    """Long table of the stored per-example attack ROC points (FPR, TPR) per record."""
    rows = [{"dataset": r["dataset"], "arch": r["arch"], "method": r["method"],
             "seed": r["seed"], "forget_classes": r["forget_classes"], "fpr": f, "tpr": t}
            for r in records if "error" not in r and r.get("forget_mia_roc")
            for f, t in zip(r["forget_mia_roc"]["fpr"], r["forget_mia_roc"]["tpr"])
            if t is not None]
    return pd.DataFrame(rows)


def roc_figure(records: list[dict], out_dir: Path) -> list[Path]:
    """Mean ROC curve of the per-example attack per method on log-scale FPR; FPRs finer than
    one forget-test sample are not drawn (no data resolves them)."""
    long = roc_frame(records)
    if long.empty:
        return []
    methods = method_order(long["method"])
    styles = _styles(methods)
    mean = long.groupby([*PANEL, "method", "fpr"], sort=False)["tpr"].mean().reset_index()
    fig, panels = _panels(long)
    for dataset, arch, ax in panels:
        here = mean[(mean["dataset"] == dataset) & (mean["arch"] == arch)]
        for method in methods:
            curve = here[here["method"] == method].sort_values("fpr")
            if not curve.empty:
                style = styles[method]
                ax.plot(curve["fpr"], curve["tpr"], color=style["color"],
                        linestyle=style["linestyle"], marker=style["marker"], markersize=3,
                        linewidth=1.2, label=label("method", method))
        grid = sorted(here["fpr"].unique())
        ax.plot(grid, grid, color="0.5", linestyle=":", linewidth=1, label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("false-positive rate (log scale)")
        ax.set_ylabel("true-positive rate")
        ax.set_title(_panel_title(dataset, arch))
    _legend_outside(fig, panels[0][2])
    fig.suptitle(metric("forget_mia_auc").description, fontsize=9)
    fig.tight_layout()
    paths = save_figure(fig, out_dir, "privacy_roc")
    pyplot().close(fig)
    return paths


def gap_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method and seed (mean over forget-class sets): the utility gap |A_Dr - A_Dr of
    retraining| and the forgetting gap |MIA-AUC - MIA-AUC of retraining|, each against the
    retrained model of the same seed and forget set."""
    cell = [*PANEL, "forget_classes", "seed"]
    columns = ["acc_retain_test", "forget_mia_auc"]
    reference = frame.loc[frame["method"] == "retrain", [*cell, *columns]]
    joined = frame.merge(reference, on=cell, how="left", suffixes=("", "_retrain"))
    joined["utility_gap"] = (joined["acc_retain_test"]
                             - joined["acc_retain_test_retrain"]).abs()
    joined["forgetting_gap"] = (joined["forget_mia_auc"]
                                - joined["forget_mia_auc_retrain"]).abs()
    return (joined.groupby([*PANEL, "method", "seed"], sort=False)
            [["utility_gap", "forgetting_gap"]].mean().dropna().reset_index())


def tradeoff_figure(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One point per method: forgetting gap (x) against utility gap (y) to retraining, error
    bars = std over seeds; retraining sits at the origin, the best place to be."""
    gaps = gap_frame(frame)
    if gaps.empty:
        return []
    stats = gaps.groupby([*PANEL, "method"], sort=False)[["utility_gap", "forgetting_gap"]]
    summary = stats.agg(["mean", "std"]).reset_index()
    summary.columns = ["_".join(c).rstrip("_") for c in summary.columns]
    methods = method_order(summary["method"])
    styles = _styles(methods)
    fig, panels = _panels(summary)
    for dataset, arch, ax in panels:
        here = summary[(summary["dataset"] == dataset) & (summary["arch"] == arch)]
        for method in methods:
            row = here[here["method"] == method]
            if row.empty:
                continue
            style = styles[method]
            ax.errorbar(row["forgetting_gap_mean"], row["utility_gap_mean"],
                        xerr=row["forgetting_gap_std"].fillna(0),
                        yerr=row["utility_gap_std"].fillna(0), color=style["color"],
                        marker=style["marker"], markersize=7, linestyle="none", capsize=3,
                        alpha=0.6 if is_reference(method) else 1.0,
                        label=label("method", method))
        ax.set_xlabel(f"|{metric('forget_mia_auc').label} − retraining's|")
        ax.set_ylabel(f"|{metric('acc_retain_test').label} − retraining's| (%)")
        ax.set_title(_panel_title(dataset, arch))
        ax.margins(0.08)
    _legend_outside(fig, panels[0][2])
    fig.tight_layout()
    paths = save_figure(fig, out_dir, "privacy_tradeoff")
    pyplot().close(fig)
    return paths


def probe_figure(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Linear-probe forget-test accuracy per method (horizontal bars, std over seeds), with
    retraining's mean as a dashed line: bars far beyond it hide the class instead of
    forgetting it."""
    import seaborn as sns

    data = frame.dropna(subset=["probe_forget_acc"])
    if data.empty:
        return []
    methods = method_order(data["method"])
    names = [label("method", m) for m in methods]
    styles = _styles(methods)
    fig, panels = _panels(data, width=5.5, height=max(3.0, 0.32 * len(methods) + 1.2))
    for dataset, arch, ax in panels:
        here = data[(data["dataset"] == dataset) & (data["arch"] == arch)]
        here = here.assign(method=[label("method", m) for m in here["method"]])
        sns.barplot(data=here, y="method", x="probe_forget_acc", order=names, errorbar="sd",
                    palette=[styles[m]["color"] for m in methods], hue="method",
                    hue_order=names, legend=False, ax=ax, orient="h")
        retrain = here.loc[here["method"] == label("method", "retrain"), "probe_forget_acc"]
        if not retrain.empty:
            ax.axvline(retrain.mean(), color="0.2", linestyle="--", linewidth=1.2)
        ax.set_xlabel(metric("probe_forget_acc").axis_label)
        ax.set_ylabel("")
        ax.set_xlim(0, 100)
        # A title rather than a legend: a legend box would cover the bottom bars.
        ax.set_title(f"{_panel_title(dataset, arch)}\n(dashed: retraining's mean)")
    fig.tight_layout()
    paths = save_figure(fig, out_dir, "privacy_probe")
    pyplot().close(fig)
    return paths


def render_privacy_figures(frame: pd.DataFrame, records: list[dict], out_dir: Path
                           ) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        return []
    return (roc_figure(records, out_dir) + tradeoff_figure(frame, out_dir)
            + probe_figure(frame, out_dir))
