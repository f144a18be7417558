"""Trajectory stage (beyond the paper): the finetune stage's linear probe on saved pretraining checkpoints.

For one (method, seed, task) and each checkpoint ``pretrain/<method>/seed<k>/checkpoints/epoch_XXXX``
(its encoder part), a linear probe is fitted with the finetune settings; the stage records its
validation accuracy, the k-NN accuracy of the frozen features and the final progress t_w of the
probe (on the analysis split) per pretraining epoch in ``trajectory.csv``.
"""

from __future__ import annotations

import logging
import time

from ...analysis.progress import progress
from ...rundir import task_name
from ...train.finetune import train_probe
from ...utils.io import write_csv, write_json
from ..context import StageContext
from ..encoders import load_encoder
from ..inputs import expected_architecture, task_sets
from .finetune import normalize_for_probe, probe_knn, probe_settings

log = logging.getLogger(__name__)

COLUMNS = ["method", "seed", "task", "pretrain_epoch", "val_accuracy", "train_accuracy", "knn_accuracy", "t_w", "seconds"]


def run(ctx: StageContext) -> None:
    s, f = ctx.settings, ctx.config.finetune
    classes = ctx.config.data.tasks[ctx.unit.task]
    task_train, task_val = task_sets(ctx.config.data, classes)
    analysis_set = task_train if f.analysis_split == "train" else task_val
    expected = expected_architecture(ctx.config.model, task_train.images.shape[-1])
    settings = probe_settings(f, ctx.unit.seed, mode="linear")
    rows = []
    checkpoints = sorted(ctx.inputs.get("checkpoint", []), key=lambda p: p.name)
    for path in checkpoints:
        started = time.perf_counter()
        encoder, meta = load_encoder(path, expected)
        normalize_for_probe(encoder, f, task_train)
        encoder.eval().to(ctx.device)
        run_ = train_probe(encoder, (task_train.images, task_train.labels), (task_val.images, task_val.labels), analysis_set.images,
                           n_classes=task_train.num_classes, precision=ctx.precision, **settings)
        final = run_.history[-1]
        row = {"method": ctx.unit.method, "seed": ctx.unit.seed, "task": task_name(classes), "pretrain_epoch": int(meta["epoch"]),
               "val_accuracy": final["val_accuracy"], "train_accuracy": final["train_accuracy"]}
        if s.knn:
            row["knn_accuracy"] = probe_knn(run_, encoder, task_train, task_val, f.knn_k, ctx.device)
        if s.progress:
            row["t_w"] = float(progress(run_.snapshots[-1:], analysis_set.labels)[0])
        row["seconds"] = round(time.perf_counter() - started, 3)
        rows.append(row)
        log.info("trajectory %s: pretraining epoch %d, probe accuracy %.3f", ctx.unit.id, row["pretrain_epoch"], row["val_accuracy"])
    rows.sort(key=lambda r: r["pretrain_epoch"])
    write_csv(ctx.folder / "trajectory.csv", rows, [c for c in COLUMNS if any(c in r for r in rows)])
    write_json(ctx.folder / "trajectory.json", {
        **ctx.record, "kind": "trajectory", "method": ctx.unit.method, "seed": ctx.unit.seed, "task_classes": list(classes),
        "split": f.analysis_split, "probe_settings": settings, "knn_k": f.knn_k, "epochs": [r["pretrain_epoch"] for r in rows],
    })
