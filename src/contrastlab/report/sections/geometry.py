"""Progress toward the truth (Fig. 1b) and the InPCA maps of the probes' trajectories (Fig. 2a)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ... import rundir
from ...utils.io import load_array
from .. import html as h
from ..context import ReportContext, Section
from ..geometry_figures import HtmlEmbed, inpca_map_html, plot_inpca_map, plot_progress_curves
from ..tables import PAPER_FINAL_PROGRESS
from .common import quantity_table

INTRO = ("t_w = argmin over λ of the Bhattacharyya distance from the model's predictions to the geodesic from P0 (uniform) "
         "to P* (the truth), on the task's analysis split. Solid: this formula; dashed: the original plotting script's "
         "raw-p formula (p instead of √p in the Bhattacharyya sum), shown for comparison with the paper's figure only.")


def _stacked(by_seed: dict[int, np.ndarray]) -> np.ndarray:
    """Seeds' curves as (seeds, epochs), cut to the shortest (a run cut short has fewer epochs)."""
    length = min(len(c) for c in by_seed.values())
    return np.stack([by_seed[s][:length] for s in sorted(by_seed)])


def _inpca(ctx: ReportContext, unit, task: str, first: bool) -> list[str]:
    """Static and interactive InPCA map of one task (empty when the unit holds no map)."""
    path = unit.path(rundir.INPCA)
    if not path.exists():  # a study of the random-init baseline alone has no map
        return []
    coords, meta = load_array(path)
    runs: dict[str, list[int]] = defaultdict(list)
    truth = None
    for i, point in enumerate(meta["points"]):
        if point["method"] == "truth":
            truth = coords[i]
        else:
            runs[f"{point['method']} seed {point['seed']}"].append(i)
    coords_by_run = {run: coords[idx] for run, idx in runs.items()}
    method_of_run = {run: run.split(" seed ")[0] for run in runs}
    kwargs = dict(truth_coords=truth, explained=meta["explained"], eigenvalues=meta["eigenvalues"])
    figure = ctx.save_figure(plot_inpca_map(coords_by_run, method_of_run, title=f"InPCA, {task}", **kwargs), f"inpca_{task}")
    eigenvalues = ", ".join(f"{v:+.4g}" for v in meta["eigenvalues"])
    # plotly.js is inlined once, with the first interactive map; the others use it.
    return [f"<h3>InPCA of the probes' trajectories, {h.esc(task)}</h3>", h.img(figure, f"InPCA map, {task} (3 leading components)"),
            inpca_map_html(coords_by_run, method_of_run, title=f"InPCA (interactive), {task}",
                           embed=HtmlEmbed(include_plotlyjs=first, div_id=f"inpca-{task}"), **kwargs),
            h.paragraph(f"Eigenvalues of W (signed; negative = Minkowski directions): {eigenvalues}.")]


def geometry_section(ctx: ReportContext) -> None:
    section = Section("Progress toward the truth and InPCA (Figs. 1b, 2a)", "geometry")
    units = {u.task: u for u in ctx.run.units.get("geometry", [])}
    if not units:
        return ctx.add_empty(section, "progress / InPCA not computed (disabled or not run yet)")
    drawn, listed = ctx.run.shown_tasks()
    drawn = [t for t in drawn if t in units]
    methods = ctx.run.methods
    solid, dashed = ({t: {m: _stacked(ctx.curves[column][(m, t)]) for m in methods if (m, t) in ctx.curves.get(column, {})}
                      for t in drawn} for column in ("t_w", "t_w_raw"))
    reference = None
    if ctx.run.paper_tasks:
        reference = {t: {m: v[i] for m, v in PAPER_FINAL_PROGRESS.items()} for i, t in enumerate(ctx.run.tasks)}
    section.body.append(h.paragraph(INTRO))
    solid = {t: c for t, c in solid.items() if c}
    if solid:
        path = ctx.save_figure(plot_progress_curves(solid, raw_progress=dashed, reference_final=reference), "progress")
        section.body.append(h.img(path, "Progress t_w toward P* per probe epoch (mean ± std over seeds; dashed: raw-p formula)"))
    if listed:
        section.body.append(h.paragraph(f"Curves drawn for the first {len(drawn)} tasks; the tables cover all "
                                        f"{len(ctx.run.tasks)} (not drawn: {', '.join(listed)})."))
    section.body += quantity_table(ctx, "t_w", "progress_final")
    section.body += quantity_table(ctx, "t_w_raw", "progress_final_raw", PAPER_FINAL_PROGRESS if ctx.run.paper_tasks else None)
    first = True
    for task in drawn:
        parts = _inpca(ctx, units[task], task, first)
        first = first and not parts
        section.body += parts
    ctx.sections.append(section)
