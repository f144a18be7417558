"""Finetune stage: a linear probe (or full fine-tuning) of one encoder on one task.

Writes ``probe.safetensors`` (+ .json; the encoder too in full mode), ``snapshots.npy`` (+ .json:
(epochs+1, N, C) float32 probabilities on the analysis split), ``history.csv`` and ``result.json``.
"""

from __future__ import annotations

import torch

from ...checkpoint import save_checkpoint
from ...config import FinetuneConfig
from ...data import ImageSet
from ...models.normalization import input_normalization, set_input_normalization
from ...rundir import HISTORY, PROBE, RESULT, SNAPSHOTS
from ...train.finetune import SAMPLE_ORDER, ProbeData, ProbeRun, ProbeTrainer, extract_features, knn_accuracy
from ...utils.io import save_array, write_csv, write_json
from ..context import StageContext
from ..curves import epoch_scalars
from ..encoders import load_method_encoder
from ..inputs import expected_architecture, task_sets


def probe_settings(f: FinetuneConfig, seed: int | None, mode: str | None = None) -> dict:
    """The settings a probe trains with, as its files record them (``mode`` overrides ``f.mode``)."""
    return {"mode": mode or f.mode, "epochs": f.epochs, "batch_size": f.batch_size, "lr": f.lr, "momentum": f.momentum,
            "weight_decay": f.weight_decay, "min_lr_ratio": f.min_lr_ratio,
            "reach_min_at_last": f.schedule_end == "at_min", "seed": seed or 0}


def task_probe_data(task_train: ImageSet, task_val: ImageSet, analysis_set: ImageSet) -> ProbeData:
    """A task's splits as the probe recipe takes them."""
    return ProbeData((task_train.images, task_train.labels), (task_val.images, task_val.labels), analysis_set.images,
                     task_train.num_classes)


def normalize_for_probe(encoder: torch.nn.Module, f: FinetuneConfig, task_train: ImageSet) -> None:
    """``finetune.normalization=downstream`` (the original): probes normalize with the downstream train split's statistics."""
    if f.normalization == "downstream":
        set_input_normalization(encoder, task_train.mean, task_train.std)


def probe_knn(run: ProbeRun, encoder: torch.nn.Module, task_train: ImageSet, task_val: ImageSet, k: int,
              device: torch.device) -> float:
    """k-NN accuracy on the frozen features (the probe's cached ones in linear mode)."""
    features = run.features or {name: extract_features(encoder, s.images, device=device)
                                for name, s in (("train", task_train), ("val", task_val))}
    return knn_accuracy(features["train"], torch.from_numpy(task_train.labels), features["val"], torch.from_numpy(task_val.labels), k)


def run(ctx: StageContext) -> None:
    f, classes = ctx.settings, ctx.config.data.tasks[ctx.unit.task]
    task_train, task_val = task_sets(ctx.config.data, classes)
    checkpoint = ctx.input("encoder")
    # A contrastlab checkpoint, or a foreign one: normalized with its external entry's mean/std, else like the downstream data.
    encoder, meta = load_method_encoder(ctx.config, ctx.unit.method, checkpoint, task_train,
                                        expected_architecture(ctx.config.model, task_train.images.shape[-1]))
    ctx.manifest["encoder"] = meta["encoder"]
    normalize_for_probe(encoder, f, task_train)
    normalization = input_normalization(encoder)
    if normalization is not None:
        normalization["source"] = f.normalization
    encoder.eval().to(ctx.device)
    analysis_set = task_train if f.analysis_split == "train" else task_val
    settings = probe_settings(f, ctx.unit.seed)
    with epoch_scalars(ctx, "probe") as on_epoch:
        trainer = ProbeTrainer(f, seed=settings["seed"], precision=ctx.precision)
        run = trainer.run(encoder, task_probe_data(task_train, task_val, analysis_set), ctx.progress, on_epoch)
    knn = probe_knn(run, encoder, task_train, task_val, f.knn_k, ctx.device)
    # The study's name and seed of the encoder: an external checkpoint's sidecar or loader names it otherwise
    method = ctx.unit.method or meta.get("method")
    own = meta.get("seed") is not None and meta.get("method") == method
    pretrain_seed = meta["seed"] if own else ctx.unit.seed

    common = {
        "stage": "finetune", "method": method, "pretrain_seed": pretrain_seed, "seed": settings["seed"],
        "mode": f.mode, "label": "linear probe (frozen encoder)" if f.mode == "linear" else "full fine-tuning (beyond the paper)",
        "task_classes": list(classes), "task_class_names": task_train.classes, "dataset": task_train.name,
        # The input normalization the probe was trained with (analyses of the probe use the same).
        "encoder_checkpoint": str(checkpoint), "encoder": meta["encoder"], "architecture": meta.get("architecture"),
        "normalization": normalization or meta.get("normalization"),
        "epochs": len(run.history) - 1, "settings": settings, "record": ctx.record,
    }
    parts = {"probe": run.probe_state}
    if run.encoder_state is not None:
        parts["encoder"] = run.encoder_state
    save_checkpoint(ctx.folder / PROBE, parts, {**common, "kind": "probe"})
    save_array(ctx.folder / SNAPSHOTS, run.snapshots, {
        **common, "kind": "snapshots", "split": f.analysis_split, "sample_order": SAMPLE_ORDER,
        "shape": list(run.snapshots.shape), "labels": analysis_set.labels.tolist(),
    })
    write_csv(ctx.folder / HISTORY, run.history)
    final = run.history[-1]
    write_json(ctx.folder / RESULT, {
        **common, "kind": "result",
        "val_accuracy": final["val_accuracy"], "val_loss": final["val_loss"],
        "train_accuracy": final["train_accuracy"], "train_loss": final["train_loss"],
        "knn_accuracy": knn, "knn_k": f.knn_k,
        "seconds": {name: round(value, 3) for name, value in run.seconds.items()},
    })
