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
    ctx.sections.append(section)
