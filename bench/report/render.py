"""Re-render a grid's tables and figures from its stored records (no computation)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from bench.harness.store import read_records
from bench.report.aggregate import records_frame, summarize
from bench.report.figures import render_figures
from bench.report.tables import latex_table, markdown_table

log = logging.getLogger(__name__)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def render(grid_name: str, *, results_dir: Path, plots_dir: Path) -> list[Path]:
    """Write summary.csv, table.md, table.tex and the figures; returns the written paths."""
    out = results_dir / grid_name
    # Latest record per cell: a cell recomputed under a new configuration replaces the old.
    records = list({r["cell"]: r for r in read_records(out / "runs.jsonl")}.values())
    frame = records_frame(records)
    if frame.empty:
        log.warning("no records for grid %s under %s: nothing to render", grid_name, out)
        return []
    summary = summarize(frame)
    written = []
    for name, text in (("summary.csv", summary.to_csv(index=False, float_format="%.4f")),
                       ("table.md", markdown_table(summary)),
                       ("table.tex", latex_table(summary))):
        _write_atomic(out / name, text)
        written.append(out / name)
    written += render_figures(frame, records, plots_dir / grid_name)
    return written
