"""Distributions over tasks: with more tasks than per-task figures, one strip + box per method."""

from __future__ import annotations

from .. import html as h
from ..context import PER_TASK_FIGURES, ReportContext, Section
from ..distribution_figures import plot_task_distributions
from ..results import QUANTITIES
from .common import task_means

# The quantities shown (the first present of each group: sharpness prefers the normalized Hessian).
GROUPS = (("probe_accuracy",), ("knn_accuracy",), ("t_w",), ("sharpness_top_normalized", "sharpness_top"), ("fgsm_score",))


def distributions_section(ctx: ReportContext) -> None:
    run = ctx.run
    if len(run.tasks) <= PER_TASK_FIGURES:
        return  # the per-task tables and figures show every task
    section = Section(f"Distributions over {len(run.tasks)} tasks", "distributions")
    values = {}
    for group in GROUPS:
        key = next((k for k in group if k in ctx.results), None)
        if key is not None:
            per_method = {m: task_means(ctx, key, m) for m in run.methods}
            values[QUANTITIES[key].title] = {m: v for m, v in per_method.items() if v}
    if not values:
        return
    path = ctx.save_figure(plot_task_distributions(values, title=f"Per-task results over {len(run.tasks)} tasks",
                                                   ylabel="mean over seeds, one point per task"), "distributions")
    section.body.append(h.img(path, "One point per task (its mean over seeds), boxes: median and quartiles over tasks; "
                                    "in brackets: the number of tasks"))
    ctx.sections.append(section)
