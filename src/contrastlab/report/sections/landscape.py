"""Loss landscapes (Fig. 1a): contours, 3-D surfaces and 1-D slices for the first tasks, a table for all."""

from __future__ import annotations

import numpy as np

from ... import rundir
from ...analysis.surface_grid import Surface, load_surface
from .. import html as h
from ..context import ReportContext, Section, unit_settings
from ..landscape_figures import plot_landscape_1d, plot_landscape_contours, plot_landscape_surfaces_3d
from ..results import identity
from ..tables import write_table


def row_slice(surface: Surface) -> Surface:
    """The β = 0 row of a 2-D surface as a 1-D surface."""
    middle = int(np.argmin(np.abs(surface.ys)))
    return Surface(surface.xs, None, surface.loss[middle], surface.accuracy[middle])


def _description(surface: Surface, settings: dict) -> str:
    params = "encoder + probe" if settings.get("params", "all") == "all" else "the probe"
    span = float(np.max(np.abs(surface.xs)))
    grid = f"{len(surface.ys)}×{len(surface.xs)}" if surface.ys is not None else f"{len(surface.xs)}-point"
    samples = settings.get("samples")
    return (f"θ* + αδ + βη with filter-normalized Gaussian directions over {params} (biases and BN parameters fixed), "
            f"{grid} grid on [−{span:g}, {span:g}]², mean cross-entropy on "
            f"{samples if samples is not None else 'all'} {settings.get('split', 'train')}-split samples.")


def landscape_section(ctx: ReportContext) -> None:
    section = Section("Loss landscapes (Fig. 1a)", "landscape")
    units = ctx.run.units.get("landscape", [])
    if not units:
        return ctx.add_empty(section, "landscapes not computed (disabled or not run yet)")
    drawn, listed = ctx.run.shown_tasks()
    rows, shown, description = [], {}, ""
    first_seed = min(identity(u)[2] for u in units)
    for unit in units:
        surface, meta = load_surface(unit.path(rundir.SURFACE))
        method, task, seed = identity(unit, meta)
        description = description or _description(surface, unit_settings(unit, meta))
        centre = (len(surface.ys) // 2, len(surface.xs) // 2) if surface.ys is not None else (len(surface.xs) // 2,)
        rows.append({"method": method, "seed": seed, "task": task, "loss at θ*": round(float(surface.loss[centre]), 4),
                     "mean loss in grid": round(float(np.nanmean(surface.loss)), 4),
                     "max loss in grid": round(float(np.nanmax(surface.loss)), 4)})
        if task in drawn and seed == first_seed and surface.ys is not None:
            shown.setdefault(task, {})[method] = surface
    order = {m: i for i, m in enumerate(ctx.run.methods)}
    task_order = {t: i for i, t in enumerate(ctx.run.tasks)}
    rows.sort(key=lambda r: (task_order.get(r["task"], 0), order.get(r["method"], 0), r["seed"]))
    section.body.append(h.paragraph(description + f" Shown: seed {first_seed}; contour levels 0.1 to 4 by 0.3 as in the original."))
    for task in (t for t in drawn if t in shown):
        surfaces = {m: shown[task][m] for m in ctx.run.methods if m in shown[task]}
        section.body.append(f"<h3>{h.esc(task)}</h3>")
        for plot, suffix, caption, data in (
                (plot_landscape_contours, "contours", "contours", surfaces),
                (plot_landscape_surfaces_3d, "surface3d", "3-D surface", surfaces),
                (plot_landscape_1d, "1d", "1-D slice β = 0", {m: row_slice(s) for m, s in surfaces.items()})):
            path = ctx.save_figure(plot(data), f"landscape_{suffix}_{task}")
            section.body.append(h.img(path, f"Loss landscape {caption}, {task}"))
    if listed:
        section.body.append(h.paragraph(f"Not drawn ({len(listed)} more tasks, see the table): {', '.join(listed)}."))
    write_table(ctx.table_dir, "landscape", rows)
    section.body.append(h.table(rows) if not listed else h.details(f"per run ({len(rows)} surfaces)", h.table(rows)))
    ctx.sections.append(section)
