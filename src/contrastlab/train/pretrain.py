"""Pretraining: one loop, the recipe :class:`Pretrainer`, for every method of :mod:`.methods`.

The whole training set lives on the training device as one uint8 tensor; each epoch is a
seeded permutation cut into batches; views are augmented on the device with per-sample
random parameters drawn from one explicit generator. That generator, the weights and the
optimizer state are checkpointed together, so a resumed run continues exactly where the
last complete checkpoint left off.

Run directory::

    OUT/checkpoints/epoch_0000.safetensors + .json   epoch 0, chosen epochs, the last
    OUT/metrics.csv                                  one row per epoch
    OUT/encoder.safetensors + encoder.json           the final encoder (what probes load)
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import distributed as dist
from ..augment import make_views
from ..checkpoint import read_checkpoint, save_checkpoint, subset, load_state
from ..config import ModelConfig, PretrainConfig, to_dict
from ..config_checks import saved_checkpoint_epochs
from ..data import ImageSet
from ..errors import CheckpointError, NonFiniteError
from ..models import architecture, build_encoder, stem_options
from .methods import HeadSpec, StepBatch, get_method, projection_std
from ..precision import autocast as precision_autocast
from ..rundir import ENCODER, METRICS, checkpoint_file, latest_checkpoint
from ..utils.io import first_line, write_csv
from ..utils.progress import progress_bar
from .schedule import cosine_lr

log = logging.getLogger(__name__)

# projection_std: the collapse measure of methods.projection_std, the epoch's mean over steps.
METRIC_FIELDS = ["epoch", "lr", "loss", "images_per_s", "seconds", "projection_std"]


def compiled_or_eager(model: nn.Module) -> Any:
    """``torch.compile(model)`` where that works, else ``model``: a compiler that is missing or
    fails (no C++ compiler, an unsupported platform) costs a warning, not the run. Compilation
    happens at the first call and again for a new input shape (e.g. a shorter last batch)."""
    try:
        compiled = torch.compile(model)
    except Exception as exc:  # noqa: BLE001 - any failure of the optional compiler means eager
        log.warning("torch.compile is unavailable (%s); training eagerly", first_line(exc))
        return model
    state = {"forward": compiled}

    def forward(x: torch.Tensor) -> torch.Tensor:
        try:
            return state["forward"](x)
        except Exception as exc:  # noqa: BLE001
            if state["forward"] is model:
                raise
            log.warning("torch.compile failed (%s); training eagerly", first_line(exc))
            state["forward"] = model
            return model(x)

    return forward


def _generator_device(meta: dict[str, Any], state: torch.Tensor) -> str:
    """The device type of the generator whose state a checkpoint holds. Checkpoints written
    before the sidecar recorded it are told apart by the state's size (CPU mt19937: 5056 bytes;
    CUDA Philox: 16)."""
    saved = meta.get("generator_device")
    if saved is not None:
        return str(saved)
    return "cpu" if state.numel() == torch.Generator().get_state().numel() else "cuda"


def batches(permutation: torch.Tensor, batch_size: int, min_size: int = 2) -> list[torch.Tensor]:
    """Cut an epoch's permutation (N,) into batches; a last batch smaller than ``min_size``
    joins the one before it (a one-sample batch has no negatives and breaks BatchNorm)."""
    chunks = list(permutation.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < min_size:
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


def _read_metrics(path: Path, up_to_epoch: int) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["epoch"]) <= up_to_epoch]


@dataclass
class RunSpec:
    """One pretraining run: which method and seed, what to record and whom to tell."""

    method: str
    seed: int
    record: dict[str, Any] = field(default_factory=dict)  # stored in every sidecar (e.g. the study config)
    progress: bool = False
    on_epoch: Callable[[dict[str, float]], None] | None = None  # gets each epoch's metrics row


class Pretrainer:
    """The pretraining recipe: given the ``pretrain`` and ``model`` config sections, where to compute
    and at which precision, :meth:`run` trains one encoder (resuming from the last complete
    checkpoint in its folder) and returns the path of the final encoder checkpoint.

    ``precision`` is "fp32" (no autocast) or "bf16" (bfloat16 autocast on ``device``); the caller
    resolves any "auto". ``settings.compile`` runs the online network through ``torch.compile``
    (falling back to eager, with a warning, where that fails). Under ``torchrun`` each rank trains
    on its share of every global batch and the method's loss sees the gathered global batch.
    """

    def __init__(self, settings: PretrainConfig, model: ModelConfig, device: str | torch.device = "cpu", precision: str = "fp32"):
        self.settings, self.model_spec, self.device, self.precision = settings, model, torch.device(device), precision
        self.autocast = precision_autocast(precision, self.device)  # checks the name before any work
        self.rank, self.world = dist.rank(), dist.world_size()
        self.is_main = self.rank == 0

    def run(self, train_set: ImageSet, out_dir: str | Path, spec: RunSpec) -> Path:
        """Train (or finish training) one encoder into ``out_dir``; returns its final checkpoint."""
        out_dir = Path(out_dir)
        self.setup(train_set, spec)
        start_epoch = self.resume(out_dir)
        if start_epoch is None:
            start_epoch = 0
            self.save(out_dir, 0)
        p, metrics_path = self.settings, out_dir / METRICS
        rows = _read_metrics(metrics_path, start_epoch) if self.is_main else []
        save_at = set(saved_checkpoint_epochs(p.epochs, p.checkpoint_epochs, p.checkpoint_every))
        label = f"pretrain {spec.method} seed {spec.seed}"
        with progress_bar((p.epochs - start_epoch) * self.steps_per_epoch, label, spec.progress and self.is_main) as advance:
            for epoch in range(start_epoch + 1, p.epochs + 1):
                rows.append(self.train_epoch(epoch, advance))
                if self.is_main:
                    write_csv(metrics_path, rows, METRIC_FIELDS)
                    if spec.on_epoch is not None:  # e.g. TensorBoard scalars: the epoch's metrics row
                        spec.on_epoch(rows[-1])
                    log.info("%s seed %d epoch %d/%d loss %.4f", spec.method, spec.seed, epoch, p.epochs, rows[-1]["loss"])
                if epoch in save_at:
                    self.save(out_dir, epoch)
        final = out_dir / ENCODER
        if self.is_main:
            save_checkpoint(final, {"encoder": self.net.state_dict()}, {**self.meta, "epoch": p.epochs, "kind": "encoder"})
        return final

    def setup(self, train_set: ImageSet, spec: RunSpec) -> None:
        """Build the online network, the method's state, the optimizer and the generator; put the data on the device."""
        p, m, device = self.settings, self.model_spec, self.device
        self.spec, self.method = spec, get_method(spec.method)
        self.n_views = self.method.n_views(p)
        self.lr = p.lr[spec.method]
        torch.manual_seed(spec.seed)  # weight init
        channels = train_set.images.shape[-1]
        self.net = build_encoder(m.encoder, width=m.width, mean=train_set.mean, std=train_set.std, in_channels=channels,
                                 **stem_options({"stem": m.stem}))
        head_spec = HeadSpec(self.net.feature_dim, train_set.num_classes, m.projection_dim, p, spec.method, spec.seed)
        self.head = self.method.build_head(head_spec)
        self.model = nn.Sequential(self.net, self.head)
        if p.sync_bn and self.world > 1:
            if device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
                self.net, self.head = self.model[0], self.model[1]
            elif self.is_main:
                log.warning("pretrain.sync_bn needs CUDA; BatchNorm statistics stay per process on %s", device)
        # channels_last: oneDNN's NHWC convolutions and BatchNorm are faster on CPU too (1.1-1.3x per
        # step at widths 8-16, benchmarks/results/profile_quick.md); the math is the same, the
        # rounding of the convolutions not bit for bit.
        self.model.to(device, memory_format=torch.channels_last)
        self.state = self.method.build_state(self.model, head_spec)
        self.optimizer = self.method.optimizer(self.model, self.lr, p)
        self.generator = torch.Generator(device=device).manual_seed(spec.seed)
        self.meta = self._meta(train_set, channels)
        self._place_data(train_set)

    def _meta(self, train_set: ImageSet, channels: int) -> dict[str, Any]:
        """The sidecar fields of every checkpoint of this run (self-describing: method, settings, data)."""
        p, m, spec = self.settings, self.model_spec, self.spec
        own = getattr(p, spec.method, None)
        settings = {"lr": self.lr, "batch_size": p.batch_size, "views": self.n_views, "world_size": self.world,
                    "temperature": p.temperature.get(spec.method) if self.method.uses_temperature else None,  # SupCE has none
                    "precision": self.precision, "reach_min_at_last": p.schedule_end == "at_min", "compile": p.compile}
        if own is not None:
            settings["method_settings"] = to_dict(own)
        return {
            "stage": "pretrain", "method": spec.method, "family": self.method.family, "seed": spec.seed, "epochs": p.epochs,
            "architecture": architecture(m.encoder, m.width, channels, self.net.feature_dim, getattr(self.net, "stem_architecture", None)),
            "normalization": {"mean": list(train_set.mean), "std": list(train_set.std)},
            "dataset": train_set.name, "settings": settings,
            "generator_device": self.device.type,  # a CUDA generator's state cannot be restored into a CPU one
            "record": spec.record or {},
        }

    def _place_data(self, train_set: ImageSet) -> None:
        """The training set on the device as uint8 (N, C, H, W), and the forward of the online network."""
        device = self.device
        self.images = torch.from_numpy(train_set.images).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.from_numpy(train_set.labels).to(device)
        # Every rank needs at least one sample of a last batch, and one sample alone breaks BatchNorm.
        self.min_batch = 2 * self.world
        self.steps_per_epoch = len(batches(torch.arange(len(self.labels)), self.settings.batch_size, self.min_batch))
        online: nn.Module = self.model
        if self.world > 1:
            online = nn.parallel.DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.forward = compiled_or_eager(online) if self.settings.compile else online
        self.model.train()

    def resume(self, out_dir: Path) -> int | None:
        """Restore the last complete checkpoint in ``out_dir`` (weights, optimizer momentum, the method's
        state, the generator); returns its epoch, or None when there is none."""
        resume_from = latest_checkpoint(out_dir)
        if resume_from is None:
            return None
        method, seed = self.spec.method, self.spec.seed
        tensors, meta = read_checkpoint(resume_from)
        if meta.get("method") != method or meta.get("seed") != seed:
            raise ValueError(f"{out_dir} holds a {meta.get('method')} seed {meta.get('seed')} run, not {method} seed {seed}")
        load_state(self.net, subset(tensors, "encoder"), resume_from, meta.get("architecture"))
        load_state(self.head, subset(tensors, "head"), resume_from, meta.get("architecture"))
        for i, p in enumerate(self.model.parameters()):
            buf = tensors.get(f"optimizer.{i}")
            if buf is not None:  # in the parameter's memory format (channels_last), as the optimizer made it
                self.optimizer.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(buf)
        self.state.load({part: subset(tensors, part) for part in self.state.tensors()})
        saved_device = _generator_device(meta, tensors["rng.generator"])
        if saved_device != self.device.type:
            raise CheckpointError(
                f"{resume_from} was written by a run on {saved_device} and its random-number state cannot be "
                f"restored on {self.device.type}: resume on {saved_device}, or start a new --out")
        self.generator.set_state(tensors["rng.generator"])
        if self.is_main:
            log.info("resuming %s seed %d from epoch %d", method, seed, int(meta["epoch"]))
        return int(meta["epoch"])

    def save(self, out_dir: Path, epoch: int) -> None:
        """Checkpoint ``epoch``: weights, momentum buffers, the method's state and the generator (rank 0 only)."""
        if not self.is_main:
            return
        optimizer = self.optimizer
        state = {
            "encoder": self.net.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": {f"{i}": optimizer.state[p]["momentum_buffer"] for i, p in enumerate(self.model.parameters())
                          if "momentum_buffer" in optimizer.state[p]},
            **self.state.tensors(),
            "rng": {"generator": self.generator.get_state()},
        }
        save_checkpoint(checkpoint_file(out_dir, epoch), state, {**self.meta, "epoch": epoch})

    def train_epoch(self, epoch: int, advance: Callable[[int], None] = lambda n: None) -> dict[str, float]:
        """One epoch (1-based); returns its metrics row. Losses and projection spreads stay on the
        device until the epoch's one read-back."""
        p, method = self.settings, self.method
        epoch_lr = cosine_lr(epoch - 1, p.epochs, self.lr, p.min_lr_ratio, method.warmup_epochs(p), p.schedule_end == "at_min")
        for group in self.optimizer.param_groups:
            group["lr"] = epoch_lr
        started, losses, spreads, sizes = time.perf_counter(), [], [], []
        total_steps, step = p.epochs * self.steps_per_epoch, (epoch - 1) * self.steps_per_epoch
        permutation = torch.randperm(len(self.labels), generator=self.generator, device=self.device)
        for batch in batches(permutation, p.batch_size, self.min_batch):
            loss, spread, size = self._step(batch)
            step += 1
            method.after_step(self.state, step, total_steps, p)
            losses.append(loss)
            spreads.append(spread)
            sizes.append(size)
            advance(1)
        # The epoch's one read-back; what follows computes on host copies (tolist() reads no device value).
        readback = torch.stack([torch.stack(losses).float(), torch.stack(spreads).float()]).cpu()
        losses_cpu, spreads_cpu = readback[0], readback[1]
        self._check_finite(losses_cpu.tolist(), epoch)
        seen = sum(sizes)
        seconds = time.perf_counter() - started
        return {"epoch": epoch, "lr": epoch_lr, "loss": (losses_cpu.double() @ torch.tensor(sizes, dtype=torch.float64)).tolist() / seen,
                "images_per_s": seen / seconds, "seconds": seconds, "projection_std": spreads_cpu.double().mean().tolist()}

    def _step(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One optimizer step on the global batch ``batch`` (indices); returns (loss, spread, global size) without a sync."""
        rank, world = self.rank, self.world
        # Every rank augments the whole global batch with the shared generator, so the
        # views (and the generator's state) are those of a single-process run.
        x = make_views(self.images[batch], self.method.augmentation, self.n_views, self.generator,
                       size=self.images.shape[-1], crop_scale=(self.settings.crop_scale_min, 1.0))
        y = self.labels[batch]
        if world > 1:  # then each rank keeps an equal share of it
            keep = torch.arange(len(batch) - len(batch) % world, device=self.device)[rank::world]
            x, y = x[keep], y[keep]
        with self.autocast:
            outputs = self.forward(x.flatten(0, 1))  # (B*V, ...)
            loss, projections = self.method.loss(outputs, StepBatch(x, y, self.n_views), self.state, self.settings)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * world if world > 1 else loss).backward()  # DDP averages over ranks
        self.optimizer.step()
        return loss.detach(), projection_std(projections), len(y) * world

    def _check_finite(self, losses: list[float], epoch: int) -> None:
        """NonFiniteError, one line, naming the first non-finite step of the epoch and what to change."""
        first = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
        if first is None:
            return
        method, seed = self.spec.method, self.spec.seed
        raise NonFiniteError(
            f"pretraining {method} seed {seed}: loss is {losses[first]} at epoch {epoch} "
            f"(step {(epoch - 1) * self.steps_per_epoch + first + 1}); lower pretrain.lr.{method} (now {self.lr:g}), "
            f"add pretrain.warmup_epochs, or use precision fp32 if it is bf16")


def random_encoder(train_set: ImageSet, out_path: str | Path, *, seed: int, encoder: str, width: int, record: dict | None = None,
                   stem: str = "cifar") -> Path:
    """Save a randomly initialized encoder (the baseline every method is compared with)."""
    torch.manual_seed(seed)
    channels = train_set.images.shape[-1]
    net = build_encoder(encoder, width=width, mean=train_set.mean, std=train_set.std, in_channels=channels, **stem_options({"stem": stem}))
    meta = {
        "stage": "pretrain",
        "method": "random",
        "seed": seed,
        "epoch": 0,
        "epochs": 0,
        "kind": "encoder",
        "architecture": architecture(encoder, width, channels, net.feature_dim, getattr(net, "stem_architecture", None)),
        "normalization": {"mean": list(train_set.mean), "std": list(train_set.std)},
        "dataset": train_set.name,
        "record": record or {},
    }
    return save_checkpoint(out_path, {"encoder": net.state_dict()}, meta)
