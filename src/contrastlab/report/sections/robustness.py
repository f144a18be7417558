"""Adversarial robustness (Fig. 2b): accuracy and loss against ε per attack, and its mean over ε."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from ... import rundir
from ...utils.io import read_json
from .. import html as h
from ..context import ReportContext, Section, unit_settings
from ..robustness_figures import RobustnessData, plot_robustness_curves
from ..tables import cell_interval, cell_model, summary, write_table
from .common import quantity_table

ATTACKS = ("fgsm", "pgd")


def _description(ctx: ReportContext, unit) -> str:
    sidecar = read_json(unit.path(rundir.ROBUSTNESS)) if unit.path(rundir.ROBUSTNESS).exists() else {}
    s = unit_settings(unit, sidecar)
    space = s.get("space", "pixel")
    samples = s.get("samples")
    eps_max = ctx.run.report.claims.robustness_eps_max_255
    where = "pixel space (images clamped to [0, 1])" if space == "pixel" else "normalized space, unclamped (the original study)"
    return (f"Accuracy and cross-entropy under attack on {samples if samples is not None else 'all'} "
            f"{s.get('split', 'train')}-split samples, ε in {where}"
            + (f"; PGD: {s['pgd_steps']} steps, random start" if s.get("pgd_steps") else "")
            + f". Robustness score: the area under accuracy against ε over [0, {eps_max:g}/255] divided by "
              "ε_max × the clean accuracy (1: nothing lost under attack; the quantity of claim 3).")


def stacked(seeds: dict[int, tuple]) -> RobustnessData:
    """One method's curves on one task over seeds as (seeds, ε) arrays, cut to the shortest ε grid."""
    length = min(len(c[0]) for c in seeds.values())
    order = sorted(seeds)
    return RobustnessData(seeds[order[0]][0][:length], np.array([seeds[s][1][:length] for s in order]),
                          np.array([seeds[s][2][:length] for s in order]))


def _curve_rows(ctx: ReportContext, attack: str, curves) -> list[dict]:
    """One row per (task, method, ε): accuracy over seeds with the accuracy tables' interval (logit
    scale, so within [0, 1]; the seed spread pooled over the cells of the same ε when seeds are few), mean loss."""
    stacks = {(task, method): stacked(curves[task][method]) for task in ctx.run.tasks for method in ctx.run.methods
              if curves.get(task, {}).get(method)}
    models = {}
    for data in stacks.values():
        for j, e in enumerate(data.eps):
            models.setdefault(round(float(e) * 255, 3), []).append(list(data.accuracy[:, j]))
    models = {e: cell_model(dict(enumerate(dict(enumerate(v)) for v in cells)), (0.0, 1.0)) for e, cells in models.items()}
    rows = []
    for (task, method), data in stacks.items():
        for j, e in enumerate(data.eps):
            eps_255 = round(float(e) * 255, 3)
            s = summary(data.accuracy[:, j], ctx.run.confidence)
            low, high, _ = cell_interval(models[eps_255], list(data.accuracy[:, j]), ctx.run.confidence)
            rows.append({"attack": attack, "task": task, "method": method, "eps_255": eps_255,
                         "accuracy": s["mean"], "std": s["std"], "n": s["n"], "ci_low": low, "ci_high": high,
                         "values": json.dumps([round(float(v), 6) for v in data.accuracy[:, j]]),
                         "loss": round(float(data.loss[:, j].mean()), 6)})
    return rows


def robustness_section(ctx: ReportContext) -> None:
    section = Section("Adversarial robustness (Fig. 2b)", "robustness")
    units = ctx.run.units.get("robustness", [])
    if not units:
        return ctx.add_empty(section, "robustness not computed (disabled or not run yet)")
    section.body.append(h.paragraph(_description(ctx, units[0])))
    drawn, listed = ctx.run.shown_tasks()
    for attack in ATTACKS:
        curves: dict[str, dict[str, dict[int, tuple]]] = defaultdict(dict)
        for (method, task), seeds in ctx.curves.get(attack, {}).items():
            curves[task][method] = seeds
        if not curves:
            continue
        rows = _curve_rows(ctx, attack, curves)
        write_table(ctx.table_dir, f"robustness_{attack}", rows)
        section.body.append(f"<h3>{attack.upper()}</h3>")
        data = {task: {m: stacked(curves[task][m]) for m in ctx.run.methods if m in curves[task]}
                for task in drawn if task in curves}
        if data:
            path = ctx.save_figure(plot_robustness_curves(data, title=attack.upper()), f"robustness_{attack}")
            section.body.append(h.img(path, f"{attack.upper()}: accuracy and loss against ε·255 (mean ± std over seeds)"
                                      + (f"; first {len(data)} tasks" if listed else "")))
        section.body += quantity_table(ctx, f"{attack}_score", f"robustness_{attack}_score")
    if listed:
        section.body.append(h.paragraph(f"Curves drawn for the first {len(drawn)} tasks; tables/robustness_*.csv hold all "
                                        f"{len(ctx.run.tasks)} (not drawn: {', '.join(listed)})."))
    ctx.sections.append(section)
