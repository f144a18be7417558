"""Paired comparisons of every pair of methods on every per-seed quantity."""

from __future__ import annotations

import math

from .. import html as h
from ..context import PER_TASK_FIGURES, ReportContext, Section
from ..results import QUANTITIES
from ..tables import comparison_rows, write_table


def _shown(row: dict) -> dict:
    q = QUANTITIES[row["quantity"]]
    low, high, p = float(row["ci_low"]), float(row["ci_high"]), float(row["p_value"])
    interval = f" [{format(low, q.fmt)}, {format(high, q.fmt)}]" if math.isfinite(low) and math.isfinite(high) else ""
    return {"quantity": q.label, "comparison": f"{row['method_a']} − {row['method_b']}", "scope": row["scope"],
            "n": f"{row['n']} {row['unit']}{'s' if row['n'] != 1 else ''}",
            "difference [CI]": f"{format(float(row['difference']), '+' + q.fmt)}{interval}",
            "p": f"{p:.3g}" if math.isfinite(p) else "—"}


def comparisons_section(ctx: ReportContext) -> None:
    run = ctx.run
    section = Section("Paired comparisons", "comparisons")
    rows = comparison_rows(ctx.results, run.methods, run.tasks, run.confidence)
    write_table(ctx.table_dir, "comparisons", rows)
    if not rows:
        return ctx.add_empty(section, "fewer than two methods with results: nothing to compare")
    section.body.append(h.paragraph(
        f"Difference method_a − method_b with its {run.confidence:.0%} paired t-interval and two-sided p-value. "
        "Pooled: paired over tasks (each task's seeds averaged first; the tasks are the independent units). "
        "Per task: paired over the seeds both methods ran. No interval or p-value with a single pair. "
        "Every row, with the per-task ones, is in tables/comparisons.csv."))
    pooled = [_shown(r) for r in rows if r["scope"] == "pooled"]
    per_task = [_shown(r) for r in rows if r["scope"] != "pooled"]
    if len(run.tasks) > 1:
        section.body.append(h.table(pooled, ["quantity", "comparison", "n", "difference [CI]", "p"]))
    if len(run.tasks) <= PER_TASK_FIGURES:
        table = h.table(per_task, ["quantity", "comparison", "scope", "n", "difference [CI]", "p"])
        section.body.append(table if len(run.tasks) == 1 else h.details(f"per task ({len(per_task)} comparisons)", table))
    ctx.sections.append(section)
