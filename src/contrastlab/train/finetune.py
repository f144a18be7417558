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

from ..config import FinetuneConfig
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


@dataclass
class ProbeData:
    """A task's images: ``train`` and ``val`` = (uint8 images (N, H, W, C), labels (N,)); ``analysis``
    (uint8 (M, H, W, C)) are the images whose class probabilities are snapshotted."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    analysis: np.ndarray
    n_classes: int


class ProbeTrainer:
    """The probe recipe: given the ``finetune`` config section, the seed of the probe's randomness
    (init and data order) and the precision, :meth:`run` trains a probe on an encoder.

    In ``linear`` mode the encoder is never modified (it is used in eval mode under inference
    mode, its features computed once); in ``full`` mode a copy of it is trained. ``mode`` overrides
    ``settings.mode``. Everything computes where the encoder lives; ``precision`` "bf16" autocasts
    the encoder's forward passes. A non-finite training loss stops with :class:`NonFiniteError`.
    ``settings.schedule_end == "at_min"``: the cosine schedule ends at lr·min_lr_ratio on the last
    epoch, as the original's (see cosine_lr).
    """

    def __init__(self, settings: FinetuneConfig, seed: int = 0, precision: str = "fp32", mode: str | None = None):
        self.settings, self.seed, self.precision = settings, seed, precision
        self.mode = mode or settings.mode
        if self.mode not in ("linear", "full"):
            raise ValueError(f"mode must be 'linear' or 'full', got '{self.mode}'")

    def run(self, encoder: nn.Module, data: ProbeData, progress: bool = False,
            on_epoch: Callable[[dict[str, float]], None] | None = None) -> ProbeRun:
        """Train the probe; snapshots at epoch 0 (before any step) and after every epoch."""
        f = self.settings
        self.setup(encoder, data)
        started = time.perf_counter()
        self.record(0, 0.0, on_epoch)
        with progress_bar(f.epochs, f"probe ({self.mode})", progress) as advance:
            for epoch in range(1, f.epochs + 1):
                epoch_lr = self.train_epoch(epoch)
                self.record(epoch, epoch_lr, on_epoch)
                if not math.isfinite(self.history[-1]["train_loss"]):  # the epoch's evaluation: no extra sync per step
                    raise NonFiniteError(f"probe training: loss is {self.history[-1]['train_loss']} at epoch {epoch}; "
                                         "lower finetune.lr (or check the encoder checkpoint)")
                advance(1)
        self.seconds["training"] = time.perf_counter() - started
        encoder_state = self.trained[0].state_dict() if self.mode == "full" else None
        return ProbeRun(snapshots=self.snapshots, history=self.history, probe_state=self.probe.state_dict(),
                        encoder_state=encoder_state, features=self.frozen_features, seconds=self.seconds)

    def setup(self, encoder: nn.Module, data: ProbeData) -> None:
        """The probe, its inputs (frozen features, or images for full mode), the optimizer and the generator."""
        f = self.settings
        self.device = device = model_device(encoder) or torch.device("cpu")
        self.autocast = precision_autocast(self.precision, device)
        torch.manual_seed(self.seed)
        self.probe = linear_classifier(encoder.feature_dim, data.n_classes).to(device)
        self.y_train = torch.from_numpy(data.train[1]).to(device)
        self.y_val = torch.from_numpy(data.val[1]).to(device)
        self.seconds: dict[str, float] = {}
        self.frozen_features = None
        if self.mode == "linear":
            self._linear_inputs(encoder, data)
        else:
            self._full_inputs(encoder, data)
        self.optimizer = torch.optim.SGD(self.trained.parameters(), lr=f.lr, momentum=f.momentum, weight_decay=f.weight_decay)
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        self.snapshots = np.empty((f.epochs + 1, len(data.analysis), data.n_classes), dtype=np.float32)
        self.history: list[dict[str, float]] = []

    def _linear_inputs(self, encoder: nn.Module, data: ProbeData) -> None:
        started, device = time.perf_counter(), self.device
        with self.autocast:
            self.frozen_features = {"train": extract_features(encoder, data.train[0], device=device),
                                    "val": extract_features(encoder, data.val[0], device=device)}
            # The analysis split is usually the train split itself: no third pass over it.
            analysis_features = (self.frozen_features["train"] if data.analysis is data.train[0]
                                 else extract_features(encoder, data.analysis, device=device))
        self.x_train, self.x_val, self.x_analysis = (
            f.to(device) for f in (self.frozen_features["train"], self.frozen_features["val"], analysis_features))
        self.seconds["features"] = time.perf_counter() - started
        self.trained: nn.Module = self.probe
        self.forward = self.probe

    def _full_inputs(self, encoder: nn.Module, data: ProbeData) -> None:
        network = copy.deepcopy(encoder).to(self.device)
        self.trained = trained = nn.Sequential(network, self.probe)
        self.x_train, self.x_val, self.x_analysis = (to_tensor(a, self.device) for a in (data.train[0], data.val[0], data.analysis))
        autocast = self.autocast

        def forward(x: torch.Tensor) -> torch.Tensor:
            was = trained.training
            trained.eval()
            with autocast:
                out = trained(x).float()
            trained.train(was)
            return out

        self.forward = forward

    def train_epoch(self, epoch: int) -> float:
        """One epoch (1-based) of SGD on the probe (and the encoder's copy in full mode); returns its lr."""
        f = self.settings
        epoch_lr = cosine_lr(epoch - 1, f.epochs, f.lr, f.min_lr_ratio, reach_min_at_last=f.schedule_end == "at_min")
        for group in self.optimizer.param_groups:
            group["lr"] = epoch_lr
        self.trained.train()
        for batch in torch.randperm(len(self.y_train), generator=self.generator, device=self.device).split(f.batch_size):
            with self.autocast:
                loss = F.cross_entropy(self.trained(self.x_train[batch]).float(), self.y_train[batch])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return epoch_lr

    def record(self, epoch: int, epoch_lr: float, on_epoch: Callable[[dict[str, float]], None] | None = None) -> None:
        """Evaluate after ``epoch``: the history row and the analysis split's snapshot."""
        train_loss, train_acc, _ = _evaluate(self.forward, self.x_train, self.y_train, 1024)
        val_loss, val_acc, _ = _evaluate(self.forward, self.x_val, self.y_val, 1024)
        dummy = torch.zeros(len(self.x_analysis), dtype=torch.long, device=self.device)
        _, _, probs = _evaluate(self.forward, self.x_analysis, dummy, 1024)
        self.snapshots[epoch] = probs.cpu().numpy()
        self.history.append({"epoch": epoch, "lr": epoch_lr, "train_loss": train_loss, "train_accuracy": train_acc,
                             "val_loss": val_loss, "val_accuracy": val_acc})
        if on_epoch is not None:  # e.g. TensorBoard scalars: the epoch's history row
            on_epoch(self.history[-1])
