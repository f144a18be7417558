"""Geometry stage: progress t_w of every probe of a task, and the InPCA map of their trajectories."""

from __future__ import annotations

import logging

import numpy as np

from ...analysis.inpca import inpca
from ...analysis.progress import progress as progress_of
from ...utils.io import load_array, save_array, write_csv
from ..context import StageContext
from ..plan import RANDOM

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> None:
    g = ctx.settings
    rows, trajectories, points, labels, classes = [], [], [], None, None
    for path in ctx.inputs.get("snapshots", []):
        snapshots, meta = load_array(path, check_finite=True)
        labels, classes = np.asarray(meta["labels"]), meta["task_classes"]
        t_w = progress_of(snapshots, labels)
        t_raw = progress_of(snapshots, labels, raw_probabilities=True) if g.raw_probabilities else None
        run_rows = [{"method": meta["method"], "seed": meta["pretrain_seed"], "epoch": epoch, "t_w": float(t_w[epoch]),
                     **({"t_w_raw": float(t_raw[epoch])} if t_raw is not None else {})} for epoch in range(len(snapshots))]
        rows += run_rows
        # The random-init baseline's probes wander far in prediction space; in the InPCA map they
        # would set the axes and squeeze the pretrained methods into a corner (the paper's map
        # has only the three methods). Its progress t_w is still reported.
        if meta["method"] != RANDOM:
            trajectories.append(snapshots)
            points += [{"method": r["method"], "seed": r["seed"], "epoch": r["epoch"]} for r in run_rows]
    write_csv(ctx.folder / "progress.csv", rows)
    if not trajectories:
        log.info("InPCA skipped for %s: no pretrained method's probes", ctx.unit.id)
        return

    n_classes = trajectories[0].shape[-1]
    truth = np.eye(n_classes, dtype=np.float32)[labels][None]  # P*, (1, N, C)
    # The distance matrix, the heavy part, is computed on the unit's device (numpy's threads on the CPU).
    device = None if ctx.device.type == "cpu" else ctx.device
    result = inpca(np.concatenate(trajectories + [truth]), n_components=g.n_components, device=device)  # (runs*(E+1) + 1, N, C)
    points.append({"method": "truth", "seed": None, "epoch": None})
    save_array(ctx.folder / "inpca.npy", result.coords, {
        **ctx.record, "kind": "inpca", "task_classes": classes, "split": ctx.config.finetune.analysis_split,
        "points": points, "eigenvalues": np.asarray(result.eigenvalues).tolist(), "explained": np.asarray(result.explained).tolist(),
    })
