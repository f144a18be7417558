"""The per-seed table every section shows: written as CSV + Markdown, rendered with intervals."""

from __future__ import annotations

import numpy as np

from .. import html as h
from ..context import PER_TASK_FIGURES, ReportContext
from ..results import QUANTITIES
from ..tables import cell_model, interval_text, pivot_markdown, pooled_mean_interval, seed_rows, write_table

ALL_TASKS = "all tasks"


def task_means(ctx: ReportContext, key: str, method: str) -> list[float]:
    """The method's mean over seeds on each task that has ``key``, in task order."""
    by_key = ctx.results.get(key, {})
    return [float(np.mean(list(by_key[(method, t)].values()))) for t in ctx.run.tasks if by_key.get((method, t))]


def quantity_table(ctx: ReportContext, key: str, table_name: str, reference: dict | None = None) -> list[str]:
    """Write tables/<table_name>.csv|md for quantity ``key``; return its HTML (empty without values).

    HTML cells: "mean [ci_low, ci_high]" over seeds, the interval of :func:`tables.cell_model`
    (the seed-to-seed spread pooled over cells when seeds are few; on the logit scale for a
    proportion, so that it stays inside its range). With several tasks, a column "all tasks" gives
    the mean of the per-task means with its interval, tasks fixed. With many tasks the table is
    transposed (tasks as rows) so that it stays readable.
    """
    run, quantity = ctx.run, QUANTITIES[key]
    by_key = ctx.results.get(key, {})
    model = cell_model({k: v for k, v in by_key.items() if k[0] in run.methods and k[1] in run.tasks}, quantity.bounds)
    rows = seed_rows(by_key, run.methods, run.tasks, run.confidence, model)
    if not rows:
        return []
    cell = lambda r: interval_text(r, quantity.fmt)  # noqa: E731
    write_table(ctx.table_dir, table_name, rows, pivot_markdown(rows, run.methods, run.tasks, cell, reference))
    methods = [m for m in run.methods if any(r["method"] == m for r in rows)]
    columns = _columns(rows, methods, run.tasks, cell, reference)
    if len(run.tasks) > 1:
        columns[ALL_TASKS] = {}
        for m in methods:
            cells = [list(by_key[(m, t)].values()) for t in run.tasks if by_key.get((m, t))]
            if cells:
                columns[ALL_TASKS][m] = interval_text(pooled_mean_interval(model, cells, run.confidence), quantity.fmt)
    n_seeds = sorted({r["n"] for r in rows})
    note = (f"Mean [{model.describe(run.confidence)}] over n = {'/'.join(map(str, n_seeds))} seeds per cell"
            + (f"; '{ALL_TASKS}': mean of the per-task means, its interval from the same seed-to-seed spread "
               "with the tasks fixed" if ALL_TASKS in columns else "")
            + ". Per-seed values, n, mean and std are in the table's CSV"
            + (". In brackets: the original study's numbers." if reference else "."))
    if len(run.tasks) <= PER_TASK_FIGURES:
        table_rows = [{"method": m, **{t: columns[t].get(m, "—") for t in columns}} for m in methods]
        body = h.table(table_rows, ["method", *columns])
    else:  # transposed, the pooled row first
        order = [ALL_TASKS, *run.tasks]
        table_rows = [{"task": t, **{m: columns[t].get(m, "—") for m in methods}} for t in order if t in columns]
        body = h.table(table_rows[:1], ["task", *methods]) + h.details(f"per task ({len(run.tasks)} tasks)", h.table(table_rows[1:], ["task", *methods]))
    return [f"<h3>{h.esc(quantity.label)}</h3>", body, h.paragraph(note)]


def _columns(rows: list[dict], methods: list[str], tasks: list[str], cell, reference: dict | None) -> dict:
    """task -> method -> the cell's text (with the paper's number in brackets where there is one)."""
    by_key = {(r["method"], r["task"]): r for r in rows}
    columns = {}
    for task_index, task in enumerate(tasks):
        column = {}
        for method in methods:
            row = by_key.get((method, task))
            text = cell(row) if row else "—"
            if reference and method in reference and task_index < len(reference[method]):
                text += f" (paper {reference[method][task_index]:g})"
            column[method] = text
        columns[task] = column
    return columns
