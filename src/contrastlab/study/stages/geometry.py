"""Geometry stage: progress t_w of every probe of a task, and the InPCA map of their trajectories.

Writes ``progress.csv`` and ``inpca.npy`` (+ .json); with ``compare_inputs`` also
``inpca_comparison.json``: the map's spectrum with the other choice of ``truth_copies`` and the
Procrustes disparity between the two maps' trajectory points.
"""

from __future__ import annotations

import logging

import numpy as np

from ... import rundir
from ...analysis.inpca import bhattacharyya_matrix, embed_distances
from ...analysis.progress import progress as progress_of
from ...utils.io import load_array, save_array, write_csv, write_json
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
    write_csv(ctx.folder / rundir.PROGRESS, rows)
    if not trajectories:
        log.info("InPCA skipped for %s: no pretrained method's probes", ctx.unit.id)
        return

    n_classes = trajectories[0].shape[-1]
    truth = np.eye(n_classes, dtype=np.float32)[labels][None]  # P*, (1, N, C)
    # The distance matrix, the heavy part, is computed on the unit's device (numpy's threads on the CPU).
    device = None if ctx.device.type == "cpu" else ctx.device
    # Distances once, with one P*: copies of P* only repeat its row and column (zero distance to each other).
    distances = bhattacharyya_matrix(np.concatenate(trajectories + [truth]), device=device)  # (runs*(E+1) + 1)²
    seeds = sorted({p["seed"] for p in points})
    maps = {copies: truth_map(distances, truth_count(copies, len(seeds)), g.n_components) for copies in
            ((g.truth_copies, other_copies(g.truth_copies)) if g.compare_inputs else (g.truth_copies,))}
    result = maps[g.truth_copies]
    n_truth = truth_count(g.truth_copies, len(seeds))
    points += [{"method": "truth", "seed": seeds[i] if n_truth > 1 else None, "epoch": None} for i in range(n_truth)]
    save_array(ctx.folder / rundir.INPCA, result.coords, {
        **ctx.record, "kind": "inpca", "task_classes": classes, "split": ctx.config.finetune.analysis_split,
        "points": points, "eigenvalues": np.asarray(result.eigenvalues).tolist(), "explained": np.asarray(result.explained).tolist(),
        "truth_copies": g.truth_copies, "truth_points": n_truth,
    })
    if g.compare_inputs:
        n_runs = len(distances) - 1  # the trajectory points, shared by both maps
        write_json(ctx.folder / rundir.INPCA_COMPARISON, {
            **ctx.record, "kind": "inpca_comparison", "task_classes": classes, "used": g.truth_copies,
            "maps": {copies: {"truth_points": truth_count(copies, len(seeds)), "eigenvalues": np.asarray(m.eigenvalues).tolist(),
                              "explained": np.asarray(m.explained).tolist()} for copies, m in maps.items()},
            "procrustes_disparity": procrustes_disparity(*(m.coords[:n_runs] for m in maps.values())),
        })


def other_copies(copies: str) -> str:
    return "per_seed" if copies == "one" else "one"


def truth_count(copies: str, n_seeds: int) -> int:
    """How many P* points the map holds: one, or one per seed (the original's script)."""
    return max(n_seeds, 1) if copies == "per_seed" else 1


def truth_map(distances: np.ndarray, copies: int, n_components: int):
    """InPCA of the models of ``distances`` (the last one P*) with P* repeated ``copies`` times.

    The copies move no distance, but they weigh P* in the centring J = I − 11ᵀ/M, which shifts
    the map's origin and changes its spectrum."""
    index = np.r_[np.arange(len(distances)), np.full(copies - 1, len(distances) - 1)]
    return embed_distances(distances[np.ix_(index, index)], n_components)


def procrustes_disparity(a: np.ndarray, b: np.ndarray) -> float:
    """1 − (Σ singular values of AᵀB)² for centred, unit-Frobenius A and B (scipy.spatial.procrustes'
    disparity): 0 when the maps agree up to a shift, rotation or reflection and scale; at most 1."""
    a, b = (x - x.mean(0) for x in (np.asarray(a, np.float64), np.asarray(b, np.float64)))
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0 if na == nb else 1.0
    s = np.linalg.svd((a / na).T @ (b / nb), compute_uv=False)
    return float(max(0.0, 1.0 - s.sum() ** 2))
