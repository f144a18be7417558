"""Trajectory stage (beyond the paper): the finetune stage's linear probe on saved pretraining checkpoints.

For one (method, seed, task) and each checkpoint ``pretrain/<method>/seed<k>/checkpoints/epoch_XXXX``
(its encoder part), a linear probe is fitted with the finetune settings; the stage records its
validation accuracy, the k-NN accuracy of the frozen features and the final progress t_w of the
probe (on the analysis split) per pretraining epoch in ``trajectory.csv``.

Two of those probes usually exist already: the last checkpoint holds the final encoder, which
``finetune/<method>/seed<k>/<task>`` probes, and epoch 0 the random-init encoder, which
``finetune/random/seed<k>/<task>`` probes. The plan hands those finetune units over as inputs
(roles "finetune": their result.json, "finetune_encoder": the encoder each probed, pairwise).
A checkpoint's row is read from one of them, not fitted, only when that unit provably ran the
probe this stage would fit (:func:`finetune_probe`): its encoder's tensors equal the checkpoint's,
and settings, data and execution match. ``trajectory.json`` says which epochs were read from
which unit ("reused"); the ``seconds`` column is then the time it took to read the row.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...analysis.progress import progress
from ...config import to_dict
from ...data import ImageSet
from ...errors import ContrastlabError
from ... import rundir
from ...rundir import changed_outputs, read_manifest, task_name
from ...train.finetune import ProbeTrainer
from ...utils.io import first_line, load_array, read_json_object, write_csv, write_json
from ..context import StageContext
from ..encoders import load_encoder
from ..inputs import expected_architecture, task_sets
from .finetune import normalize_for_probe, probe_knn, probe_settings, task_probe_data

log = logging.getLogger(__name__)

COLUMNS = ["method", "seed", "task", "pretrain_epoch", "val_accuracy", "train_accuracy", "knn_accuracy", "t_w", "seconds"]


class NotReusable(Exception):
    """Why a finetune unit's probe cannot stand in for a fitted one (the stage then fits)."""


@dataclass
class FinetuneProbe:
    """A finetune unit's probe that this stage may reuse: whom it came from, what it probed, its numbers."""

    unit: str
    key: str
    encoder: dict[str, torch.Tensor]  # state of the probed encoder, input normalization included
    values: dict[str, float]  # the row's numbers: val/train accuracy (+ knn_accuracy, t_w)


def run(ctx: StageContext) -> None:
    f = ctx.config.finetune
    classes = ctx.config.data.tasks[ctx.unit.task]
    task_train, task_val = task_sets(ctx.config.data, classes)
    analysis_set = task_train if f.analysis_split == "train" else task_val
    expected = expected_architecture(ctx.config.model, task_train.images.shape[-1])
    settings = probe_settings(f, ctx.unit.seed, mode="linear")
    probes = reusable_probes(ctx, settings, expected, task_train, analysis_set)
    rows, reused = [], []
    checkpoints = sorted(ctx.inputs.get("checkpoint", []), key=lambda p: p.name)
    for path in checkpoints:
        started = time.perf_counter()
        encoder, meta = load_encoder(path, expected)
        normalize_for_probe(encoder, f, task_train)
        state = encoder.state_dict()
        probe = next((p for p in probes if same_tensors(state, p.encoder)), None)
        if probe is not None:
            values = probe.values
            reused.append({"pretrain_epoch": int(meta["epoch"]), "unit": probe.unit, "unit_key": probe.key})
        else:
            values = fit_probe(ctx, encoder, settings, task_train, task_val, analysis_set)
        row = {"method": ctx.unit.method, "seed": ctx.unit.seed, "task": task_name(classes), "pretrain_epoch": int(meta["epoch"]),
               **values, "seconds": round(time.perf_counter() - started, 3)}
        rows.append(row)
        how = f"read from {probe.unit}" if probe is not None else "fitted"
        log.info("trajectory %s: pretraining epoch %d, probe accuracy %.3f (%s)", ctx.unit.id, row["pretrain_epoch"],
                 row["val_accuracy"], how)
    rows.sort(key=lambda r: r["pretrain_epoch"])
    write_csv(ctx.folder / rundir.TRAJECTORY, rows, [c for c in COLUMNS if any(c in r for r in rows)])
    write_json(ctx.folder / rundir.TRAJECTORY_SUMMARY, {
        **ctx.record, "kind": "trajectory", "method": ctx.unit.method, "seed": ctx.unit.seed, "task_classes": list(classes),
        "split": f.analysis_split, "probe_settings": settings, "knn_k": f.knn_k, "epochs": [r["pretrain_epoch"] for r in rows],
        "reused": sorted(reused, key=lambda r: r["pretrain_epoch"]),
    })


def fit_probe(ctx: StageContext, encoder: torch.nn.Module, settings: dict, task_train: ImageSet, task_val: ImageSet,
              analysis_set: ImageSet) -> dict[str, float]:
    """The row's numbers from a probe fitted on ``encoder`` (normalized for the probe, on the CPU)."""
    encoder.eval().to(ctx.device)
    trainer = ProbeTrainer(ctx.config.finetune, seed=settings["seed"], precision=ctx.precision, mode=settings["mode"])
    run_ = trainer.run(encoder, task_probe_data(task_train, task_val, analysis_set))
    final = run_.history[-1]
    values = {"val_accuracy": final["val_accuracy"], "train_accuracy": final["train_accuracy"]}
    if ctx.settings.knn:
        values["knn_accuracy"] = probe_knn(run_, encoder, task_train, task_val, ctx.config.finetune.knn_k, ctx.device)
    if ctx.settings.progress:
        values["t_w"] = final_progress(run_.snapshots, analysis_set.labels)
    return values


def final_progress(snapshots: np.ndarray, labels: np.ndarray) -> float:
    """t_w of the last snapshot (epochs+1, N, C): the same call for a fitted and a reused probe."""
    return float(progress(snapshots[-1:], labels)[0])


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold the same names, dtypes, shapes and values."""
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def reusable_probes(ctx: StageContext, settings: dict, expected: dict, task_train: ImageSet,
                    analysis_set: ImageSet) -> list[FinetuneProbe]:
    """The finetune units among the inputs whose probes this stage may reuse; the others are logged with why not."""
    results, encoders = ctx.inputs.get("finetune", []), ctx.inputs.get("finetune_encoder", [])
    if len(results) != len(encoders):
        raise ValueError(f"unit {ctx.unit.id}: {len(results)} 'finetune' inputs but {len(encoders)} 'finetune_encoder' inputs")
    probes = []
    for result, encoder in zip(results, encoders):
        try:
            probes.append(finetune_probe(ctx, result, encoder, settings, expected, task_train, analysis_set))
        except (NotReusable, ContrastlabError, OSError) as exc:  # a missing or broken unit: fit instead
            log.info("trajectory %s: not reusing %s: %s", ctx.unit.id, result.parent, first_line(exc))
    return probes


def as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), to compare with what a manifest holds."""
    return json.loads(json.dumps(value))


def finetune_probe(ctx: StageContext, result_path: Path, encoder_path: Path, settings: dict, expected: dict,
                   task_train: ImageSet, analysis_set: ImageSet) -> FinetuneProbe:
    """The probe of the finetune unit that wrote ``result_path``, if it is the one this stage would fit
    on an encoder equal to ``encoder_path``'s; else :class:`NotReusable` saying why."""
    f, folder = ctx.config.finetune, result_path.parent
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("kind") != "finetune":
        raise NotReusable("not a finished finetune unit")
    if changed_outputs(folder, manifest):
        raise NotReusable("its files changed since it finished")
    # Same settings, computed the same way: the whole finetune section, the probe's arguments, device and precision.
    if manifest.get("settings") != as_json(to_dict(f)):
        raise NotReusable("other finetune settings")
    here = {**ctx.execution(), "torch": torch.__version__, "device": ctx.device.type}
    there = {**manifest, "torch": (manifest.get("versions") or {}).get("torch"), "device": str(manifest.get("device")).split(":")[0]}
    if any(there.get(k) != here[k] for k in ("device", "device_name", "precision", "tf32", "threads", "torch")):
        raise NotReusable("computed on another device, precision, thread count or torch version")
    result = read_json_object(result_path, "finetune result")
    if (result.get("settings"), result.get("task_classes"), result.get("dataset")) != (
            as_json(settings), list(ctx.config.data.tasks[ctx.unit.task]), task_train.name):
        raise NotReusable("other probe settings or task")
    if ctx.settings.knn and result.get("knn_k") != f.knn_k:
        raise NotReusable("another k for k-NN")
    if not encoder_unchanged(encoder_path, manifest):
        raise NotReusable(f"{encoder_path.name} is not provably the file it probed")
    encoder, _ = load_encoder(encoder_path, expected)
    normalize_for_probe(encoder, f, task_train)

    wanted = ("val_accuracy", "train_accuracy") + (("knn_accuracy",) if ctx.settings.knn else ())
    if not all(isinstance(result.get(k), float) for k in wanted):
        raise NotReusable(f"its result.json lacks one of {', '.join(wanted)}")
    values = {k: result[k] for k in wanted}
    if ctx.settings.progress:
        snapshots, meta = load_array(folder / rundir.SNAPSHOTS)
        if meta.get("split") != f.analysis_split or meta.get("labels") != analysis_set.labels.tolist() \
                or snapshots.shape != (settings["epochs"] + 1, len(analysis_set.labels), task_train.num_classes):
            raise NotReusable("its snapshots are of another split or shape")
        values["t_w"] = final_progress(snapshots, analysis_set.labels)
    return FinetuneProbe(manifest["unit"], manifest["key"], encoder.state_dict(), values)


def encoder_unchanged(encoder_path: Path, finetune_manifest: dict) -> bool:
    """Whether ``encoder_path`` is still the file the finetune unit probed: its unit's manifest lists it
    unchanged and finished before the finetune unit started (a rerun pretraining would be newer)."""
    folder = encoder_path.parent
    manifest = read_manifest(folder)
    record = (manifest or {}).get("files", {}).get(encoder_path.name)
    if record is None or changed_outputs(folder, {"files": {encoder_path.name: record}}):
        return False
    finished, started = manifest.get("finished"), finetune_manifest.get("started")
    return finished is not None and started is not None and finished <= started
