"""Render a grid's tables and figures from its current records (no computation).

Only records made by the grid's current configuration, code and data enter a table; the
others are counted and reported as stale, never mixed into a mean.
"""
from __future__ import annotations

import logging
from pathlib import Path

from bench.harness.cells import Context, current_records
from bench.harness.grid import Grid
from bench.harness.store import read_records, write_atomic
from bench.report.aggregate import flagged, records_frame, summarize
from bench.report.figures import render_figures
from bench.report.privacy_figures import render_privacy_figures
from bench.report.shadows import shadow_markdown, shadow_table
from bench.report.tables import (
    extended_markdown_table,
    latex_table,
    markdown_table,
    provenance_note,
    warning_note,
)

log = logging.getLogger(__name__)


def render(grid: Grid, *, results_dir: Path, plots_dir: Path,
           contexts: dict[int, Context] | None = None) -> list[Path]:
    """Write summary.csv, table.md, table.tex and the figures; returns the written paths."""
    out = results_dir / grid.name
    current, stale = current_records(grid, list(read_records(out / "runs.jsonl")), contexts)
    if stale:
        log.warning("%s: skipped %d stale record(s), made by another configuration, other "
                    "code or other data, outside the grid's cells, or by a method that is "
                    "not registered now",
                    out / "runs.jsonl", stale)
    records = list(current.values())
    frame = records_frame(records)
    if frame.empty:
        log.warning("no current records for grid %s under %s: nothing to render", grid.name, out)
        return []
    summary = summarize(frame)
    written = []
    flags = flagged(frame)
    notes = [n for n in (warning_note(flags), provenance_note(frame)) if n]
    shadow_block = ""
    if grid.shadows:
        shadows = shadow_table(records, count=grid.shadows)
        write_atomic(out / "shadows.csv", shadows.to_csv(index=False, float_format="%.4f"))
        written.append(out / "shadows.csv")
        shadow_block = shadow_markdown(shadows)
    for name, text in (("summary.csv", summary.to_csv(index=False, float_format="%.4f")),
                       ("table.md", "\n".join(
                           part for part in (markdown_table(summary, flags),
                                             extended_markdown_table(summary),
                                             shadow_block,
                                             "\n\n".join(notes) + "\n") if part)),
                       ("table.tex", latex_table(summary, flags)
                        + "".join(f"% {n}\n" for n in notes))):
        write_atomic(out / name, text)
        written.append(out / name)
    written += render_figures(frame, records, plots_dir / grid.name)
    written += render_privacy_figures(frame, records, plots_dir / grid.name)
    return written
