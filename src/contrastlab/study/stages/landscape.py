"""Landscape stage: the 2-D loss surface around a trained classifier (Fig. 1a).

Writes ``surface.npy`` (+ .json); with ``compare_seeding`` also ``surface_<other seeding>.npy``,
the same surface along directions drawn with the other seeding, for the report's comparison.
"""

from __future__ import annotations

import zlib

import numpy as np

from ... import rundir
from ...analysis.directions import random_directions
from ...analysis.landscape import SurfaceSettings, loss_surface
from ...analysis.surface_grid import save_surface
from ...config import LandscapeConfig
from ..context import StageContext
from ..inputs import probe_and_data

PARAMETER_SUBSETS = {"all": "all", "probe": "1"}  # config value -> selector: the probe is module "1" of classifier(encoder, probe)
SEEDINGS = ("shared", "per_model")


def direction_seed(seed: int, seeding: str, method: str | None, pretrain_seed: int | None, classes) -> int:
    """The seed of a model's directions: ``seed`` for every model ("shared"), or ("per_model") a
    deterministic hash of ``seed`` and the model's identity (method, pretraining seed, task), so
    that each model gets its own directions, as the original's script drew them per model."""
    if seeding == "shared":
        return int(seed)
    if seeding != "per_model":
        raise ValueError(f"direction seeding must be one of {', '.join(SEEDINGS)}, got '{seeding}'")
    text = f"{int(seed)}/{method}/{pretrain_seed}/{','.join(str(c) for c in classes)}"
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def _surface(ctx: StageContext, s: LandscapeConfig, model, images, labels, meta: dict, seeding: str, compared: bool) -> None:
    """The surface along directions of ``seeding``: the unit's own, or (``compared``) the other seeding's."""
    seed = direction_seed(s.seed, seeding, meta.get("method"), meta.get("seed"), meta["task_classes"])
    directions = random_directions(model, n=2, seed=seed, params=PARAMETER_SUBSETS[s.params], ignore=s.ignore,
                                   normalization=s.normalization)
    axis = np.linspace(-s.span, s.span, s.grid)
    partial = ctx.folder / rundir.partial_surface_file(seeding if compared else None)
    settings = SurfaceSettings(batch_size=ctx.batch_size(s.batch_size), precision=ctx.precision, resume_path=partial, progress=ctx.progress)
    surface = loss_surface(model, images, labels, directions, axis, axis, settings)
    save_surface(ctx.folder / rundir.surface_file(seeding if compared else None), surface, {
        **meta, "params": s.params, "direction_seed": seed, "direction_seeding": seeding, "base_seed": s.seed,
        "ignore": s.ignore, "direction_normalization": s.normalization, "precision": ctx.precision,
        "layout": "values[0] = loss, values[1] = accuracy; rows = y, columns = x",
    })
    for leftover in (partial, partial.with_suffix(".json")):  # the resume file of the grid, now complete
        leftover.unlink(missing_ok=True)


def run(ctx: StageContext) -> None:
    s = ctx.settings
    model, images, labels, meta = probe_and_data(ctx, s.samples)
    _surface(ctx, s, model, images, labels, meta, s.direction_seed, compared=False)
    if s.compare_seeding:  # the other seeding, on the same trained model
        other = next(x for x in SEEDINGS if x != s.direction_seed)
        _surface(ctx, s, model, images, labels, meta, other, compared=True)
