"""Linear probes (and, beyond the paper, full fine-tuning) on few-way downstream tasks.

In ``linear`` mode the encoder is frozen in eval mode (its BN statistics untouched): its
features are computed once and the probe is trained on them. Snapshots of the probe at
epoch 0 (before any step) and after every epoch give the class probabilities on the task's
analysis split, an array (epochs+1, N, C) that the trajectory analyses read. The probe trains
where the encoder lives; the finetune stage (``contrastlab.study.stages.finetune``) loads the
encoder, places it and writes the unit's files.
"""

from __future__ import annotations

import copy
import math
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NonFiniteError
from ..precision import autocast as precision_autocast, model_device
from ..models import linear_classifier
from ..utils.progress import progress_bar
from .schedule import cosine_lr

log = logging.getLogger(__name__)

SAMPLE_ORDER = "class-ordered: the samples of the task's first class in dataset order, then the second class's, ..."


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1], contiguous (not NHWC-strided)."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255).contiguous()


@torch.inference_mode()
def extract_features(encoder: nn.Module, images: np.ndarray, batch_size: int = 512, device: torch.device | str = "cpu") -> torch.Tensor:
    """Features of a frozen encoder in eval mode: uint8 (N, H, W, C) -> float32 (N, D)."""
    was_training = encoder.training
    encoder.eval()
    try:
        chunks = [encoder(to_tensor(images[i : i + batch_size], device)).float() for i in range(0, len(images), batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(chunks).cpu()


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, test_labels: torch.Tensor, k: int = 20) -> float:
    """Training-free accuracy: majority vote of the ``k`` nearest training features by cosine similarity.

    Shapes: train (N, D), (N,); test (M, D), (M,). Ties go to the lower class index.
    """
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    k = min(k, len(train))
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for start in range(0, len(test), 1024):
        neighbours = (test[start : start + 1024] @ train.T).topk(k, dim=1).indices  # (m, k)
        votes = F.one_hot(train_labels[neighbours], n_classes).sum(1)  # (m, C)
        correct += int((votes.argmax(1) == test_labels[start : start + 1024]).sum())
    return correct / len(test)


@dataclass
class ProbeRun:
    """What one probe training produced."""

    snapshots: np.ndarray  # (epochs+1, N_analysis, C) float32 probabilities
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch 0..E
    probe_state: dict[str, torch.Tensor] = field(default_factory=dict)
    encoder_state: dict[str, torch.Tensor] | None = None  # full mode only
    # Frozen-encoder features {"train": (N, D), "val": (M, D)} on CPU, linear mode only (k-NN reuses them).
    features: dict[str, torch.Tensor] | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # "features" (linear mode) and "training"


def _evaluate(forward, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int) -> tuple[float, float, torch.Tensor]:
    """Mean CE, accuracy and probabilities (N, C) of ``forward`` over ``inputs``."""
    with torch.inference_mode():
        logits = torch.cat([forward(inputs[i : i + batch_size]).float() for i in range(0, len(inputs), batch_size)])
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy, logits.softmax(1)


def train_probe(
    encoder: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    analysis: np.ndarray,
    *,
    n_classes: int,
    mode: str = "linear",
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    min_lr_ratio: float = 0.008,
    reach_min_at_last: bool = False,
    seed: int = 0,
    precision: str = "fp32",
    progress: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> ProbeRun:
    """Train a probe on ``train`` = (uint8 images (N, H, W, C), labels (N,)); evaluate on ``val``.

    ``analysis`` (uint8 (M, H, W, C)) are the images whose class probabilities are snapshotted
    at epoch 0 and after every epoch. In ``linear`` mode the encoder is never modified (it is
    used in eval mode under inference mode); in ``full`` mode a copy of it is trained. Everything
    computes where the encoder lives; ``precision`` "bf16" autocasts the encoder's forward passes.
    A non-finite training loss stops with :class:`NonFiniteError`. ``reach_min_at_last``: the
    cosine schedule ends at lr·min_lr_ratio on the last epoch, as the original's (see cosine_lr).
    """
    device = model_device(encoder) or torch.device("cpu")
    autocast = precision_autocast(precision, device)
    torch.manual_seed(seed)
    probe = linear_classifier(encoder.feature_dim, n_classes).to(device)
    y_train = torch.from_numpy(train[1]).to(device)
    y_val = torch.from_numpy(val[1]).to(device)
    seconds: dict[str, float] = {}
    frozen_features = None

    started = time.perf_counter()
    if mode == "linear":
        with autocast:
            frozen_features = {"train": extract_features(encoder, train[0], device=device), "val": extract_features(encoder, val[0], device=device)}
            # The analysis split is usually the train split itself: no third pass over it.
            analysis_features = frozen_features["train"] if analysis is train[0] else extract_features(encoder, analysis, device=device)
        x_train, x_val, x_analysis = (f.to(device) for f in (frozen_features["train"], frozen_features["val"], analysis_features))
        seconds["features"] = time.perf_counter() - started
        trained: nn.Module = probe
        forward = probe
    elif mode == "full":
        network = copy.deepcopy(encoder).to(device)
        trained = nn.Sequential(network, probe)
        x_train, x_val, x_analysis = (to_tensor(a, device) for a in (train[0], val[0], analysis))

        def forward(x: torch.Tensor) -> torch.Tensor:
            was = trained.training
            trained.eval()
            with autocast:
                out = trained(x).float()
            trained.train(was)
            return out
    else:
        raise ValueError(f"mode must be 'linear' or 'full', got '{mode}'")

    optimizer = torch.optim.SGD(trained.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator(device=device).manual_seed(seed)
    snapshots = np.empty((epochs + 1, len(analysis), n_classes), dtype=np.float32)
    history: list[dict[str, float]] = []

    def record(epoch: int, epoch_lr: float) -> None:
        train_loss, train_acc, _ = _evaluate(forward, x_train, y_train, 1024)
        val_loss, val_acc, _ = _evaluate(forward, x_val, y_val, 1024)
        _, _, probs = _evaluate(forward, x_analysis, torch.zeros(len(x_analysis), dtype=torch.long, device=device), 1024)
        snapshots[epoch] = probs.cpu().numpy()
        history.append({"epoch": epoch, "lr": epoch_lr, "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val_loss, "val_accuracy": val_acc})
        if on_epoch is not None:  # e.g. TensorBoard scalars: the epoch's history row
            on_epoch(history[-1])

    started = time.perf_counter()
    record(0, 0.0)
    with progress_bar(epochs, f"probe ({mode})", progress) as advance:
        for epoch in range(1, epochs + 1):
            epoch_lr = cosine_lr(epoch - 1, epochs, lr, min_lr_ratio, reach_min_at_last=reach_min_at_last)
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr
            trained.train()
            for batch in torch.randperm(len(y_train), generator=generator, device=device).split(batch_size):
                with autocast:
                    loss = F.cross_entropy(trained(x_train[batch]).float(), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            record(epoch, epoch_lr)
            if not math.isfinite(history[-1]["train_loss"]):  # the epoch's evaluation: no extra sync per step
                raise NonFiniteError(f"probe training: loss is {history[-1]['train_loss']} at epoch {epoch}; "
                                     "lower finetune.lr (or check the encoder checkpoint)")
            advance(1)

    seconds["training"] = time.perf_counter() - started
    encoder_state = trained[0].state_dict() if mode == "full" else None
    return ProbeRun(snapshots=snapshots, history=history, probe_state=probe.state_dict(), encoder_state=encoder_state,
                    features=frozen_features, seconds=seconds)
