"""Paper-style tables from ``summary``: rows dataset > model > class, an (A_Df, A_Dr) pair per method."""
from __future__ import annotations

import math

import pandas as pd

from bench.metrics import EXTENDED_METRICS, PAPER_PAIR, metric
from bench.report.aggregate import label, method_order


def _cell(mean: float, std: float, *, latex: bool) -> str:
    if math.isnan(mean):
        return "--"
    if math.isnan(std):
        return f"{mean:.2f}"
    sep = r"$\pm$" if latex else " ± "
    return f"{mean:.2f}{sep}{std:.2f}"


def _rows(summary: pd.DataFrame):
    """(dataset, arch, classes, {method: row}) in table order."""
    for (dataset, arch, classes), block in summary.groupby(
            ["dataset", "arch", "forget_classes"], sort=False):
        yield dataset, arch, classes, {r["method"]: r for _, r in block.iterrows()}


WARNING_MARK = "†"


def _values(by_method: dict, methods: list[str], *, latex: bool, marked: set[str]) -> list[str]:
    out = []
    for method in methods:
        row = by_method.get(method)
        mark = (r"$^\dagger$" if latex else WARNING_MARK) if method in marked else ""
        for name in PAPER_PAIR:
            out.append("--" if row is None else
                       _cell(row[f"{name}_mean"], row[f"{name}_std"], latex=latex) + mark)
    return out


def warning_note(flags: set[tuple[str, ...]]) -> str:
    if not flags:
        return ""
    return (f"{WARNING_MARK} some of the cell's records carry a warning (a collapse onto one "
            "class, non-finite outputs): see `warnings` in runs.jsonl.")


def _marked(flags: set[tuple[str, ...]], dataset: str, arch: str, classes: str) -> set[str]:
    return {f[3] for f in flags if f[:3] == (str(dataset), str(arch), str(classes))}


def markdown_table(summary: pd.DataFrame, flags: set[tuple[str, ...]] = frozenset()) -> str:
    methods = method_order(summary["method"])
    head = ["Dataset", "Model", "Classes"] + [
        f"{label('method', m)} {metric(name).label}" for m in methods for name in PAPER_PAIR]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for dataset, arch, classes, by_method in _rows(summary):
        cells = [label("dataset", dataset), label("arch", arch), f"Class-{classes}",
                 *_values(by_method, methods, latex=False,
                          marked=_marked(flags, dataset, arch, classes))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


BETTER_MARK = {"higher": "↑", "lower": "↓", "retrain": "≈R"}


def _short(mean: float, std: float) -> str:
    """Three significant digits: the block's metrics span 1e-3 (JS) to 1e2 (percent)."""
    if math.isnan(mean):
        return "--"
    return f"{mean:.3g}" if math.isnan(std) else f"{mean:.3g} ± {std:.2g}"


def extended_markdown_table(summary: pd.DataFrame) -> str:
    """The privacy/fidelity block beside the paper's: a row per (dataset, model, class,
    method), a column per metric beyond the paper, labelled and marked (↑ higher, ↓ lower,
    ≈R closer to retraining is better) from the declarations. Empty when no record has any
    of these metrics (records made before they existed)."""
    columns = [f"{name}_mean" for name in EXTENDED_METRICS]
    if summary[columns].isna().all().all():
        return ""
    head = ["Dataset", "Model", "Classes", "Method"] + [
        f"{metric(name).label} {BETTER_MARK[metric(name).better]}" for name in EXTENDED_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for dataset, arch, classes, by_method in _rows(summary):
        for method in method_order(by_method):
            row = by_method[method]
            cells = [label("dataset", dataset), label("arch", arch), f"Class-{classes}",
                     label("method", method),
                     *(_short(row[f"{n}_mean"], row[f"{n}_std"]) for n in EXTENDED_METRICS)]
            lines.append("| " + " | ".join(cells) + " |")
    legend = "; ".join(f"{metric(n).label}: {metric(n).description}"
                       + (f" ({metric(n).unit})" if metric(n).unit else "")
                       for n in EXTENDED_METRICS)
    return ("\n".join(lines) + "\n\nPrivacy and fidelity beyond the paper (mean ± std over "
            f"seeds; ↑ higher, ↓ lower, ≈R closer to retraining is better). {legend}.\n")


def provenance_note(frame: pd.DataFrame) -> str:
    """One line saying which code made the records: the commits, and each method's code
    version (a hash of its source, see README "Trusting the numbers")."""
    commits = sorted({str(c) for c in frame["git_commit"]})
    versions = frame.groupby("method", sort=False)["code_version"].agg(
        lambda values: "/".join(sorted({str(v) for v in values})))
    listed = ", ".join(f"{method} {versions[method]}" for method in method_order(versions.index))
    return (f"Records of {len(frame)} cells, made by commit(s) {', '.join(commits)}; "
            f"code versions: {listed}.")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#",
                  "_": r"\_", "$": r"\$", "{": r"\{", "}": r"\}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_table(summary: pd.DataFrame, flags: set[tuple[str, ...]] = frozenset()) -> str:
    """A booktabs ``tabular`` (needs \\usepackage{booktabs,multirow}) laid out like the paper."""
    methods = method_order(summary["method"])
    ncols = 3 + 2 * len(methods)
    lines = [r"% requires \usepackage{booktabs} and \usepackage{multirow}",
             r"\begin{tabular}{lll" + "cc" * len(methods) + "}", r"\toprule",
             "Dataset & Model & Classes & " + " & ".join(
                 rf"\multicolumn{{2}}{{c}}{{{latex_escape(label('method', m))}}}"
                 for m in methods) + r" \\",
             " ".join(rf"\cmidrule(lr){{{4 + 2 * i}-{5 + 2 * i}}}" for i in range(len(methods))),
             " & & & " + " & ".join([r"$A_{D_f}$ & $A_{D_r}$"] * len(methods)) + r" \\",
             r"\midrule"]
    rows = list(_rows(summary))
    span = {}
    for dataset, arch, _, _ in rows:
        span[dataset] = span.get(dataset, 0) + 1
        span[(dataset, arch)] = span.get((dataset, arch), 0) + 1
    previous: tuple[str, str] | None = None
    for dataset, arch, classes, by_method in rows:
        first_of_dataset = previous is None or previous[0] != dataset
        first_of_arch = first_of_dataset or previous[1] != arch
        if previous is not None and first_of_dataset:
            lines.append(r"\midrule")
        elif previous is not None and first_of_arch:
            lines.append(rf"\cmidrule(lr){{2-{ncols}}}")
        dataset_name = latex_escape(label("dataset", dataset))
        arch_name = latex_escape(label("arch", arch))
        dataset_text = (rf"\multirow{{{span[dataset]}}}{{*}}{{{dataset_name}}}"
                        if first_of_dataset else "")
        arch_text = (rf"\multirow{{{span[(dataset, arch)]}}}{{*}}{{{arch_name}}}"
                     if first_of_arch else "")
        cells = [dataset_text, arch_text, f"Class-{classes}",
                 *_values(by_method, methods, latex=True,
                          marked=_marked(flags, dataset, arch, classes))]
        lines.append(" & ".join(cells) + r" \\")
        previous = (dataset, arch)
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
