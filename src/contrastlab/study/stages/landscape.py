"""Landscape stage: the 2-D loss surface around a trained classifier (Fig. 1a)."""

from __future__ import annotations

import numpy as np

from ...analysis.landscape import loss_surface, random_directions, save_surface
from ..context import StageContext
from ..inputs import probe_and_data

PARAMETER_SUBSETS = {"all": "all", "probe": "1"}  # config value -> selector: the probe is module "1" of classifier(encoder, probe)


def run(ctx: StageContext) -> None:
    s = ctx.settings
    model, images, labels, meta = probe_and_data(ctx, s.samples)
    directions = random_directions(model, n=2, seed=s.seed, params=PARAMETER_SUBSETS[s.params])
    axis = np.linspace(-s.span, s.span, s.grid)
    surface = loss_surface(model, images, labels, directions, axis, axis, batch_size=s.batch_size, precision=ctx.precision,
                           resume_path=ctx.folder / "partial.npy", progress=ctx.progress)
    save_surface(ctx.folder / "surface.npy", surface, {
        **meta, "params": s.params, "direction_seed": s.seed, "precision": ctx.precision,
        "layout": "values[0] = loss, values[1] = accuracy; rows = y, columns = x",
    })
    for leftover in ("partial.npy", "partial.json"):  # the resume file of the grid, now complete
        (ctx.folder / leftover).unlink(missing_ok=True)
