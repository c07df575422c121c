"""Paper-style LaTeX and Markdown tables rendered from a summary."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from helpers import PAPER_METHODS

from bench.metrics import METRIC_NAMES
from bench.report.aggregate import records_frame, summarize
from bench.report.tables import latex_table, markdown_table

# Table columns: the original model, then the paper's methods.
PAPER_COLUMNS = ["original", *PAPER_METHODS]
PAPER_HEADERS = ["Initial", "Re-training", "Fine-tuning", "Fast-Effective", "Bad Teaching", "PBU"]
DATASETS = {"digits": "Digits", "mnist": "MNIST"}
ARCHS = {"smallcnn": "SmallCNN", "resnet18": "ResNet-18"}
CLASSES = ["2", "6", "8"]


def record(dataset, arch, classes, method, seed, *, forget, retain):
    values = dict.fromkeys(METRIC_NAMES, 1.0)
    values.update(acc_forget_test=forget, acc_retain_test=retain)
    return {"cell": f"{dataset}/{arch}/{classes}/{method}/{seed}", "dataset": dataset,
            "arch": arch, "forget_classes": classes, "method": method, "seed": seed, **values}


def expected_pair(method_index: int, classes: str) -> tuple[float, float]:
    """Seed-mean of the values below: distinct per method and class, so columns are traceable."""
    return 10.0 * method_index + int(classes) + 0.5, 90.0 - method_index + 0.5


def paper_summary(methods=PAPER_COLUMNS, seeds=(0, 1)):
    """2 datasets x 2 archs x 3 classes x methods; seeds differ by exactly 1 (std 0.71)."""
    records = []
    for dataset in DATASETS:
        for arch in ARCHS:
            for classes in CLASSES:
                for i, method in enumerate(methods):
                    for seed in seeds:
                        forget, retain = expected_pair(i, classes)
                        records.append(record(dataset, arch, classes, method, seed,
                                              forget=forget - 0.5 + seed,
                                              retain=retain - 0.5 + seed))
    return summarize(records_frame(records))


def latex_columns(row: str) -> int:
    """Columns a tabular row occupies: cells separated by &, \\multicolumn{n} counting n."""
    cells = row.removesuffix(r"\\").split("&")
    return sum(int(m.group(1)) if (m := re.search(r"\\multicolumn\{(\d+)\}", c)) else 1
               for c in cells)


def body_rows(tex: str) -> list[str]:
    """The data rows: between the \\midrule closing the header and \\bottomrule."""
    lines = tex.splitlines()
    start = lines.index(r"\midrule") + 1
    end = lines.index(r"\bottomrule")
    return [line for line in lines[start:end] if line.rstrip().endswith(r"\\")]


# ---------------------------------------------------------------- LaTeX


def test_latex_booktabs_structure_and_column_spec():
    tex = latex_table(paper_summary())
    lines = tex.splitlines()
    assert lines.count(r"\toprule") == 1 and lines.count(r"\bottomrule") == 1
    assert (lines.index(r"\begin{tabular}{lllcccccccccccc}") < lines.index(r"\toprule")
            < lines.index(r"\midrule") < lines.index(r"\bottomrule")
            < lines.index(r"\end{tabular}"))
    assert r"\hline" not in tex  # booktabs rules only


def test_latex_header_has_a_column_pair_per_method_in_paper_order():
    tex = latex_table(paper_summary(methods=list(reversed(PAPER_COLUMNS))))
    header = next(line for line in tex.splitlines() if line.startswith("Dataset &"))
    assert re.findall(r"\\multicolumn\{2\}\{c\}\{([^}]*)\}", header) == PAPER_HEADERS
    sub = next(line for line in tex.splitlines() if "A_{D_f}" in line)
    assert sub.count("$A_{D_f}$") == 6 and sub.count("$A_{D_r}$") == 6
    assert sub.index("$A_{D_f}$") < sub.index("$A_{D_r}$")
    cmid = next(line for line in tex.splitlines() if line.startswith(r"\cmidrule(lr){4-5}"))
    assert re.findall(r"\\cmidrule\(lr\)\{(\d+-\d+)\}", cmid) == [
        f"{4 + 2 * i}-{5 + 2 * i}" for i in range(6)]


def test_every_latex_row_fills_the_column_spec():
    tex = latex_table(paper_summary())
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)
    rows = [line for line in tex.splitlines() if line.rstrip().endswith(r"\\")]
    assert len(rows) == 2 + 12
    for row in rows:
        assert latex_columns(row) == len(spec), row
    for row in body_rows(tex):
        assert row.count("&") == len(spec) - 1


def test_latex_multirow_groups_dataset_then_model():
    rows = body_rows(latex_table(paper_summary()))
    assert len(rows) == 12
    dataset_spans = [(i, int(m.group(1)), m.group(2)) for i, r in enumerate(rows)
                     if (m := re.match(r"\\multirow\{(\d+)\}\{\*\}\{([^}]*)\}", r))]
    assert [(start, span, name) for start, span, name in dataset_spans] == [
        (0, 6, "Digits"), (6, 6, "MNIST")]
    arch_spans = [(i, int(m.group(1)), m.group(2)) for i, r in enumerate(rows)
                  if (m := re.search(r"^[^&]*& \\multirow\{(\d+)\}\{\*\}\{([^}]*)\}", r))]
    assert [s[0] for s in arch_spans] == [0, 3, 6, 9]
    assert all(span == 3 for _, span, _ in arch_spans)
    assert sorted(name for *_, name in arch_spans) == sorted(list(ARCHS.values()) * 2)
    # Rows inside a group leave the spanned cells empty.
    for i, row in enumerate(rows):
        cells = [c.strip() for c in row.split("&")]
        assert (cells[0] != "") == (i in (0, 6))
        assert (cells[1] != "") == (i % 3 == 0)
        assert cells[2] == f"Class-{CLASSES[i % 3]}"


def test_latex_rules_between_groups():
    lines = latex_table(paper_summary()).splitlines()
    body = lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]
    assert body.count(r"\midrule") == 1  # between the two datasets
    assert body.count(r"\cmidrule(lr){2-15}") == 2  # between the models inside each dataset


def test_latex_values_are_mean_pm_std_in_method_order():
    rows = body_rows(latex_table(paper_summary()))
    for i, row in enumerate(rows):
        classes = CLASSES[i % 3]
        values = [c.strip() for c in row.removesuffix(r"\\").split("&")][3:]
        expected = []
        for m in range(6):
            forget, retain = expected_pair(m, classes)
            expected += [f"{forget:.2f}$\\pm$0.71", f"{retain:.2f}$\\pm$0.71"]
        assert values == expected, row


def test_latex_single_seed_and_missing_method():
    summary = paper_summary(seeds=(0,))
    summary = summary[~((summary["method"] == "pbu") & (summary["forget_classes"] == "6"))]
    rows = body_rows(latex_table(summary))
    assert "$\\pm$" not in "".join(rows)  # a single seed has no std to show
    row = rows[1]  # Class-6 of the first model: PBU missing
    assert row.removesuffix(r"\\").split("&")[-2:] == [" -- ", " -- "]
    assert "--" not in rows[0]


def test_latex_escapes_plugin_method_names():
    summary = paper_summary(methods=["original", "zero_head"], seeds=(0,))
    tex = latex_table(summary)
    assert "zero\\_head" in tex
    assert not re.search(r"(?<!\\)_(?![{])", tex.replace("$A_{D_f}$", "").replace(
        "$A_{D_r}$", ""))


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_table_compiles(tmp_path):
    document = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{multirow}\n"
                "\\usepackage[landscape]{geometry}\n\\begin{document}\n\\tiny\n"
                + latex_table(paper_summary()) + "\\end{document}\n")
    (tmp_path / "table.tex").write_text(document)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                           "table.tex"], check=False, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "table.pdf").stat().st_size > 0


# ---------------------------------------------------------------- Markdown


def test_markdown_header_and_rows():
    text = markdown_table(paper_summary())
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Dataset", "Model", "Classes"] + [
        f"{name} {metric}" for name in PAPER_HEADERS for metric in ("A_Df", "A_Dr")]
    assert re.fullmatch(r"\|(---\|){15}", lines[1])
    assert len(lines) == 2 + 12
    for line in lines[2:]:
        assert len(line.strip("|").split("|")) == 15
    first = [c.strip() for c in lines[2].strip("|").split("|")]
    assert first[:3] == ["Digits", first[1], "Class-2"] and first[1] in ARCHS.values()
    forget, retain = expected_pair(0, "2")
    assert first[3:5] == [f"{forget:.2f} ± 0.71", f"{retain:.2f} ± 0.71"]


def test_a_cell_with_a_warning_is_marked_in_both_tables():
    from bench.report.aggregate import flagged
    from bench.report.tables import WARNING_MARK, warning_note

    recs = [{**rec, "warnings": ["collapse: ..."] if rec["method"] == "pbu" else []}
            for rec in (record("digits", "smallcnn", "2", m, 0, forget=0.0, retain=90.0)
                        for m in ("pbu", "retrain"))]
    frame = records_frame(recs)
    flags = flagged(frame)
    assert flags == {("digits", "smallcnn", "2", "pbu")}
    summary = summarize(frame)
    md = markdown_table(summary, flags)
    pbu_cells = [c for c in md.splitlines()[2].split("|") if WARNING_MARK in c]
    assert len(pbu_cells) == 2  # A_Df and A_Dr of pbu, not retrain's
    assert r"$^\dagger$" in latex_table(summary, flags)
    assert warning_note(flags).startswith(WARNING_MARK)
    assert WARNING_MARK not in markdown_table(summary)
