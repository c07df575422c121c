"""Figures with seaborn: accuracies per method with error bars, unlearning time, PBU curves."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import pandas as pd

from bench.harness.store import write_atomic
from bench.metrics import PAPER_PAIR, metric
from bench.report.aggregate import is_reference, label, method_order

log = logging.getLogger(__name__)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix[1:], dpi=150, bbox_inches="tight")
        write_atomic(path, buffer.getvalue())
    return paths


def _legend(name: str) -> str:
    m = metric(name)
    return f"{m.label}: {m.description}"


def _mark_references(ax, positions: list[int]) -> None:
    """Hatch and grey the bars (and grey the tick labels) of reference rows at x positions
    ``positions``: the logit mask is a sanity reference, not a competitor."""
    if not positions:
        return
    for container in ax.containers:
        for bar in getattr(container, "patches", container):
            # Categories sit at integer x positions; hue levels are offset within them.
            if round(bar.get_x() + bar.get_width() / 2) in positions:
                bar.set_hatch("///")
                bar.set_edgecolor("0.3")
                bar.set_alpha(0.55)
    ticks = ax.get_xticklabels()
    for x in positions:
        if x < len(ticks):
            ticks[x].set_color("0.45")
            ticks[x].set_fontstyle("italic")


def accuracy_figure(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """A_Df and A_Dr per method (mean over seeds and classes, error bar = std over seeds)."""
    import seaborn as sns

    long = frame.melt(id_vars=["dataset", "arch", "method", "seed", "forget_classes"],
                      value_vars=list(PAPER_PAIR), var_name="metric", value_name="accuracy")
    long["metric"] = long["metric"].map(_legend)
    long["model"] = [f"{label('dataset', d)} / {label('arch', a)}"
                     for d, a in zip(long["dataset"], long["arch"])]
    long["method"] = long["method"].map(lambda m: label("method", m))
    order = [label("method", m) for m in method_order(frame["method"])]
    grid = sns.catplot(data=long, kind="bar", x="method", y="accuracy", hue="metric",
                       col="model", col_wrap=min(3, long["model"].nunique()), order=order,
                       errorbar="sd", height=3.6, aspect=1.6, palette="colorblind")
    grid.set_axis_labels("", f"accuracy ({metric(PAPER_PAIR[0]).unit})")
    grid.set_titles("{col_name}")
    references = [i for i, m in enumerate(method_order(frame["method"])) if is_reference(m)]
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=30)
        _mark_references(ax, references)
    paths = save_figure(grid.figure, out_dir, "accuracy")
    pyplot().close(grid.figure)
    return paths


def time_figure(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Wall-clock unlearning time per method (log scale), the paper's computational-time figure."""
    import seaborn as sns

    plt = pyplot()
    data = frame[frame["method"] != "original"].assign(
        method=lambda f: f["method"].map(lambda m: label("method", m)))
    order_names = [m for m in method_order(frame["method"]) if m != "original"]
    order = [label("method", m) for m in order_names]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    sns.barplot(data=data, x="method", y="time_s", order=order, errorbar="sd", ax=ax,
                color=sns.color_palette("colorblind")[0])
    _mark_references(ax, [i for i, m in enumerate(order_names) if is_reference(m)])
    ax.set_yscale("log")
    ax.set_xlabel("")
    ax.set_ylabel(f"{metric('time_s').description} ({metric('time_s').unit}, log scale)")
    ax.tick_params(axis="x", rotation=30)
    paths = save_figure(fig, out_dir, "time")
    plt.close(fig)
    return paths


def curve_frame(records: list[dict]) -> pd.DataFrame:
    """Long table of per-epoch held-out accuracies from records whose method logged them."""
    rows = [{"method": label("method", r["method"]), "seed": r["seed"],
             "forget_classes": r["forget_classes"], "epoch": point["epoch"],
             **{_legend(name): point[name] for name in PAPER_PAIR}}
            for r in records if "error" not in r
            for point in r.get("curve", []) if "acc_forget_test" in point]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.melt(id_vars=["method", "seed", "forget_classes", "epoch"],
                      var_name="metric", value_name="accuracy")


def curve_figure(records: list[dict], out_dir: Path) -> list[Path]:
    """Per-epoch A_Df and A_Dr during unlearning, one panel per method (e.g. PBU vs official)."""
    import seaborn as sns

    long = curve_frame(records)
    if long.empty:
        return []
    grid = sns.relplot(data=long, kind="line", x="epoch", y="accuracy", hue="metric",
                       col="method", errorbar="sd", height=3.2, aspect=1.3,
                       palette="colorblind", facet_kws={"sharex": False})
    grid.set_axis_labels("epoch", "accuracy (%)")
    grid.set_titles("{col_name}")
    paths = save_figure(grid.figure, out_dir, "curves")
    pyplot().close(grid.figure)
    return paths


def render_figures(frame: pd.DataFrame, records: list[dict], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        return []
    return (accuracy_figure(frame, out_dir) + time_figure(frame, out_dir)
            + curve_figure(records, out_dir))
