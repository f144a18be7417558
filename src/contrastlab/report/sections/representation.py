"""Beyond the paper: representations along pretraining and between methods.

Three parts, each from its own units: probes on saved pretraining checkpoints (trajectory
units' trajectory.csv), linear CKA between every encoder per task (representation units'
cka.npy + cka.json) and alignment / uniformity / effective rank per encoder (alignment units'
alignment.json). Tables: pretraining_trajectory.csv, cka.csv, alignment_uniformity.csv.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ... import rundir
from ...utils.io import read_json
from .. import html as h
from ..context import PER_TASK_FIGURES, ReportContext, Section
from ..representation_figures import TRAJECTORY_PANELS, plot_cka, plot_trajectory
from ..results import identity, read_csv
from ..tables import interval_text, summary, write_table

TRAJECTORY_COLUMNS = ("val_accuracy", "train_accuracy", "knn_accuracy", "t_w")
ALIGNMENT_COLUMNS = (("alignment", "alignment (lower: positives closer)", ".3f"),
                     ("uniformity", "uniformity (lower: more uniform)", ".3f"),
                     ("effective_rank", "effective rank", ".2f"))


def representation_section(ctx: ReportContext) -> None:
    section = Section("Representations (beyond the paper)", "representations")
    parts = [_trajectory(ctx), _cka(ctx), _alignment(ctx)]
    if not any(parts):
        section.body.append(h.missing("representation analyses not computed (disabled or not run yet)"))
    for part in parts:
        section.body += part
    ctx.sections.append(section)


def trajectory_rows(ctx: ReportContext) -> list[dict]:
    """One row per (method, seed, pretraining epoch, task), in method, seed, task, epoch order."""
    rows = []
    for unit in ctx.run.units.get("trajectory", []):
        path = unit.path(rundir.TRAJECTORY)
        if not path.exists():
            continue
        method, task, seed = identity(unit)
        for r in read_csv(path):
            rows.append({"method": method, "seed": seed, "pretrain_epoch": int(r["pretrain_epoch"]), "task": task,
                         **{c: round(float(r[c]), 6) for c in TRAJECTORY_COLUMNS if r.get(c) not in (None, "")}})
    methods, tasks = {m: i for i, m in enumerate(ctx.run.methods)}, {t: i for i, t in enumerate(ctx.run.tasks)}
    return sorted(rows, key=lambda r: (methods.get(r["method"], len(methods)), r["seed"], tasks.get(r["task"], len(tasks)), r["pretrain_epoch"]))


def trajectory_bands(rows: list[dict], confidence: float) -> dict:
    """column -> method -> (epochs, mean, ci_low, ci_high): each seed's mean over tasks, then mean and interval over seeds."""
    per_seed: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))  # column -> method -> (epoch, seed) -> values
    for r in rows:
        for column, _, _ in TRAJECTORY_PANELS:
            if column in r:
                per_seed[column][r["method"]][(r["pretrain_epoch"], r["seed"])].append(r[column])
    bands: dict = {}
    for column, by_method in per_seed.items():
        bands[column] = {}
        for method, cells in by_method.items():
            epochs = sorted({e for e, _ in cells})
            stats = [summary([np.mean(v) for (e, _), v in cells.items() if e == epoch], confidence) for epoch in epochs]
            bands[column][method] = tuple(np.array(x, dtype=float) for x in
                                          (epochs, [s["mean"] for s in stats], [s["ci_low"] for s in stats], [s["ci_high"] for s in stats]))
    return bands


def _trajectory(ctx: ReportContext) -> list[str]:
    rows = trajectory_rows(ctx)
    if not rows:
        return []
    write_table(ctx.table_dir, "pretraining_trajectory", rows)
    path = ctx.save_figure(plot_trajectory(trajectory_bands(rows, ctx.run.confidence)), "pretraining_trajectory")
    epochs = sorted({r["pretrain_epoch"] for r in rows})
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = {"method": method}
        for epoch in epochs:
            values = [np.mean([r["val_accuracy"] for r in rows if r["method"] == method and r["seed"] == seed and r["pretrain_epoch"] == epoch])
                      for seed in sorted({r["seed"] for r in rows if r["method"] == method and r["pretrain_epoch"] == epoch})]
            cells[f"epoch {epoch}"] = interval_text(summary([100 * v for v in values], ctx.run.confidence), ".1f") if values else "—"
        lines.append(cells)
    return ["<h3>Linear probes along pretraining</h3>",
            h.paragraph(f"The finetune stage's linear probe fitted on the encoder saved at each pretraining epoch "
                        f"({', '.join(map(str, epochs))}): validation accuracy, k-NN accuracy and the probe's final progress t_w. "
                        f"Lines: mean over seeds of each seed's mean over tasks; bands: {ctx.run.confidence:.0%} t-interval over seeds."),
            h.img(path, "Probe accuracy, k-NN accuracy and final t_w against the pretraining epoch"),
            h.paragraph("Probe accuracy (%) by pretraining epoch, mean over tasks, mean [interval] over seeds; every row per "
                        "method, seed, epoch and task is in tables/pretraining_trajectory.csv."),
            h.table(lines)]


def _cka_matrices(ctx: ReportContext) -> list[tuple[str, list[str], np.ndarray]]:
    """(task, encoder names, CKA matrix) of every finished representation unit, in task order."""
    found = {}
    for unit in ctx.run.units.get("representation", []):
        if unit.path("cka.npy").exists() and unit.path("cka.json").exists():
            meta = read_json(unit.path("cka.json"))
            found[identity(unit, meta)[1]] = (list(meta["names"]), np.load(unit.path("cka.npy")))
    order = {t: i for i, t in enumerate(ctx.run.tasks)}
    return [(task, *found[task]) for task in sorted(found, key=lambda t: order.get(t, len(order)))]


def _cka(ctx: ReportContext) -> list[str]:
    matrices = _cka_matrices(ctx)
    if not matrices:
        return []
    names = [n for n in matrices[0][1] if all(n in m[1] for m in matrices)]  # encoders present on every task
    stacked = np.stack([m[2][np.ix_([m[1].index(n) for n in names], [m[1].index(n) for n in names])] for m in matrices])
    mean = stacked.mean(axis=0)
    rows = [{"task": "mean", "a": a, "b": b, "cka": round(float(mean[i, j]), 6)} for i, a in enumerate(names) for j, b in enumerate(names)]
    for task, task_names, matrix in matrices:
        rows += [{"task": task, "a": a, "b": b, "cka": round(float(matrix[i, j]), 6)}
                 for i, a in enumerate(task_names) for j, b in enumerate(task_names)]
    write_table(ctx.table_dir, "cka", rows)
    body = ["<h3>Representation similarity (linear CKA)</h3>",
            h.paragraph(f"Linear CKA (Kornblith et al. 2019) between the features of every pair of encoders on each task's analysis "
                        f"split; 1 = the same representation up to rotation and scale. Averaged over {len(matrices)} task(s); the "
                        "per-task matrices are in tables/cka.csv.")]
    path = ctx.save_figure(plot_cka([(f"mean over {len(matrices)} task(s)", names, mean)]), "cka_mean")
    body.append(h.img(path, "Linear CKA between encoders, mean over tasks"))
    if len(matrices) > 1:
        shown = matrices[:PER_TASK_FIGURES]
        path = ctx.save_figure(plot_cka(shown), "cka_per_task")
        body.append(h.img(path, f"Linear CKA per task ({', '.join(t for t, _, _ in shown)})"))
    return body


def _alignment(ctx: ReportContext) -> list[str]:
    per_method: dict = defaultdict(lambda: defaultdict(dict))  # method -> column -> seed -> value
    settings = {}
    for unit in ctx.run.units.get("alignment", []):
        if not unit.path(rundir.ALIGNMENT).exists():
            continue
        result = read_json(unit.path(rundir.ALIGNMENT))
        method, _, seed = identity(unit, result)
        settings = result
        for column, _, _ in ALIGNMENT_COLUMNS:
            per_method[method][column][seed] = float(result[column])
    if not per_method:
        return []
    methods = [m for m in ctx.run.methods if m in per_method] + [m for m in per_method if m not in ctx.run.methods]
    csv_rows, html_rows = [], []
    for method in methods:
        cells = {"method": method}
        for column, label, fmt in ALIGNMENT_COLUMNS:
            seeds = per_method[method][column]
            s = summary(seeds.values(), ctx.run.confidence)
            csv_rows.append({"method": method, "quantity": column, **s, "seeds": sorted(seeds), "values": [seeds[k] for k in sorted(seeds)]})
            cells[label] = interval_text(s, fmt)
        html_rows.append(cells)
    write_table(ctx.table_dir, "alignment_uniformity", csv_rows)
    return ["<h3>Alignment, uniformity and effective rank</h3>",
            h.paragraph(f"On {settings.get('pairs')} images of the pretraining data ({settings.get('dataset')}), each augmented twice with "
                        "the contrastive augmentation (the same views for every encoder): alignment = mean ‖z − z′‖² of the two views' "
                        "L2-normalized features, uniformity = log mean exp(−2‖z_i − z_j‖²) over pairs of images (Wang & Isola 2020), "
                        "effective rank of the un-augmented images' features (Roy & Vetterli 2007). Mean [interval] over seeds."),
            h.table(html_rows)]
