"""Pretraining: each method's loss curve and speed, from the pretrain units' metrics.csv."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ... import rundir
from .. import html as h
from ..context import ReportContext, Section
from ..figures import plot_pretraining_curves
from ..results import identity, read_csv
from ..tables import write_table


def pretraining_section(ctx: ReportContext) -> None:
    section = Section("Pretraining", "pretraining")
    curves: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    for unit in ctx.run.units.get("pretrain", []):
        metrics = unit.path(rundir.METRICS)
        if metrics.exists():  # the random-init baseline trains nothing
            method, _, seed = identity(unit)
            rows = read_csv(metrics)
            if rows:
                curves[method][seed] = rows
    if not curves:
        return ctx.add_empty(section, "no finished pretraining run")
    curves = {m: curves[m] for m in ctx.run.methods if m in curves} | curves
    path = ctx.save_figure(plot_pretraining_curves(curves), "pretraining")
    section.body.append(h.img(path, "Pretraining loss per epoch (each method's own objective)"))
    rows = []
    for method, by_seed in curves.items():
        speeds = [float(r["images_per_s"]) for rows_ in by_seed.values() for r in rows_ if r.get("images_per_s")]
        seconds = [sum(float(r.get("seconds") or 0) for r in rows_) for rows_ in by_seed.values()]
        rows.append({"method": method, "seeds": len(by_seed),
                     "final loss (mean over seeds)": f"{np.mean([float(r[-1]['loss']) for r in by_seed.values()]):.4f}",
                     "images/s (median)": f"{np.median(speeds):.0f}" if speeds else "—",
                     "seconds per run (mean)": f"{np.mean(seconds):.1f}"})
    write_table(ctx.table_dir, "pretraining", rows)
    section.body.append(h.table(rows))
    collapse = collapse_text(curves)
    if collapse:
        section.body.append(h.paragraph(collapse))
    ctx.sections.append(section)


# Below this, the std of the L2-normalized projections × √D says the projections have collapsed onto
# (nearly) one point: ≈ 1 for projections spread evenly over the sphere, 0 for a constant output.
COLLAPSE_BELOW = 0.1


def collapsed_runs(curves: dict[str, dict[int, list[dict]]]) -> tuple[list[tuple[str, int, float]], list[float]]:
    """([(method, seed, final projection_std)] of the runs that collapsed, every run's final value),
    from metrics.csv's ``projection_std`` column (runs without it are not judged)."""
    collapsed, finals = [], []
    for method, by_seed in curves.items():
        for seed, rows in sorted(by_seed.items()):
            values = [float(r["projection_std"]) for r in rows if r.get("projection_std") not in (None, "")]
            if values:
                finals.append(values[-1])
                if values[-1] < COLLAPSE_BELOW:
                    collapsed.append((method, seed, values[-1]))
    return collapsed, finals


def collapse_text(curves: dict[str, dict[int, list[dict]]]) -> str:
    """One line on representation collapse; "" when no run records projection_std."""
    collapsed, finals = collapsed_runs(curves)
    if not finals:
        return ""
    measure = f"std of the L2-normalized projections × √D at the last epoch, collapse below {COLLAPSE_BELOW:g}"
    if not collapsed:
        return f"No run collapsed ({measure}; lowest final value {min(finals):.3g})."
    runs = ", ".join(f"{m} seed {s} ({v:.3g})" for m, s, v in collapsed)
    return f"Collapsed ({measure}): {runs}. Their encoders' downstream numbers describe a collapsed representation."
