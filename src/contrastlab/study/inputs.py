"""What stages read: datasets and tasks (loaded once per process), trained models from files."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_state, read_checkpoint, subset
from ..config import DataConfig, ModelConfig
from ..data import ImageSet, load_dataset, make_task
from ..models import architecture, build_encoder, classifier, linear_classifier, stem_options
from ..models.normalization import has_normalization, set_input_normalization
from ..train.finetune import to_tensor
from .encoders import load_encoder


@functools.lru_cache(maxsize=8)
def _dataset(name: str, split: str, root: str | None, image_size: int | None, channels: int | None,
             per_class: int | None, seed: int) -> ImageSet:
    # Every probe and analysis of a study reads the same downstream splits: generate or decode them once.
    return load_dataset(name, split, root, image_size=image_size, channels=channels, per_class=per_class, seed=seed)


def pretrain_set(d: DataConfig) -> ImageSet:
    return _dataset(d.pretrain, "train", d.root, d.image_size, d.channels, d.pretrain_per_class, d.seed)


def task_sets(d: DataConfig, classes: list[int]) -> tuple[ImageSet, ImageSet]:
    """The (train, val) ImageSets of a task: its classes, relabelled 0..k-1, class-ordered."""
    train = _dataset(d.downstream, "train", d.root, d.image_size, d.channels, d.downstream_train_per_class, d.seed)
    test = _dataset(d.downstream, "test", d.root, d.image_size, d.channels, d.downstream_test_per_class, d.seed)
    return make_task(train, classes), make_task(test, classes)


def expected_architecture(m: ModelConfig, in_channels: int) -> dict:
    probe = build_encoder(m.encoder, width=m.width, in_channels=in_channels, **stem_options({"stem": m.stem}))
    return architecture(m.encoder, m.width, in_channels, probe.feature_dim, getattr(probe, "stem_architecture", None))


def balanced_subset(labels: np.ndarray, n: int | None) -> np.ndarray:
    """Indices of ``n`` samples taken evenly from each class (the first ones of each), in order."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    per_class = max(1, n // len(classes))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in classes]))


def analysis_split(d: DataConfig, classes: list[int], split: str, samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, H, W, C) and labels (n,) of a class-balanced subset of a task's analysis split."""
    train, val = task_sets(d, classes)
    chosen = train if split == "train" else val
    keep = balanced_subset(chosen.labels, samples)
    return chosen.images[keep], chosen.labels[keep]


def load_classifier(encoder_path: Path, probe_path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Encoder + trained probe as one classifier in eval mode on ``device``, and the probe's sidecar."""
    tensors, meta = read_checkpoint(probe_path)
    # An analysis sees the inputs the probe was trained on: the normalization its sidecar records
    # (finetune.normalization=downstream replaces the encoder's own).
    norm = meta.get("normalization") or {}
    arch = meta.get("architecture") or {}
    encoder, _ = load_encoder(encoder_path, meta.get("architecture"), mean=norm.get("mean"), std=norm.get("std"),
                              in_channels=len(norm.get("mean") or [0, 0, 0]), stem_padding=arch.get("stem_padding"))
    if any(k.startswith("encoder.") for k in tensors):  # full fine-tuning also trained the encoder
        load_state(encoder, subset(tensors, "encoder"), probe_path, meta.get("architecture"))
    if norm.get("mean") and norm.get("std") and has_normalization(encoder):
        set_input_normalization(encoder, norm["mean"], norm["std"])
    probe = linear_classifier(encoder.feature_dim, len(meta["task_classes"]))
    load_state(probe, subset(tensors, "probe"), probe_path)
    return classifier(encoder, probe).eval().to(device), meta


def probe_and_data(ctx, samples: int | None) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, dict]:
    """The trained classifier of an analysis unit and its analysis-split samples, all on ``ctx.device``:
    model (eval), pixels (n, C, H, W) in [0, 1], labels (n,), and the metadata every analysis records."""
    model, probe_meta = load_classifier(ctx.input("encoder"), ctx.input("probe"), ctx.device)
    if probe_meta.get("encoder"):  # where the encoder came from (contrastlab, solo-learn, ...), for the manifest
        ctx.manifest["encoder"] = probe_meta["encoder"]
    classes = list(probe_meta["task_classes"])
    split = ctx.config.finetune.analysis_split
    images, labels = analysis_split(ctx.config.data, classes, split, samples)
    meta = {**ctx.record, "method": probe_meta.get("method"), "seed": probe_meta.get("pretrain_seed"),
            "task_classes": classes, "split": split, "samples": len(labels), "normalization": probe_meta.get("normalization")}
    return model, to_tensor(images, ctx.device), torch.from_numpy(labels).to(ctx.device), meta
