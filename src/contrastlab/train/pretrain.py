"""Pretraining with SimCLR, SupCon or supervised cross-entropy (SupCE).

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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import distributed as dist
from ..augment import make_views
from ..checkpoint import read_checkpoint, save_checkpoint, subset, load_state
from ..data import ImageSet
from ..errors import CheckpointError, NonFiniteError
from ..models import architecture, build_encoder, linear_classifier, projection_head, stem_options
from ..objectives import get_objective
from ..precision import autocast as precision_autocast
from ..utils.io import first_line, write_csv
from ..utils.progress import progress_bar
from .schedule import cosine_lr

log = logging.getLogger(__name__)

METRIC_FIELDS = ["epoch", "lr", "loss", "images_per_s", "seconds"]


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


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The last complete (sidecar present) checkpoint in ``out_dir/checkpoints``."""
    found = sorted(p for p in (out_dir / "checkpoints").glob("epoch_*.safetensors") if p.with_suffix(".json").exists())
    return found[-1] if found else None


def _read_metrics(path: Path, up_to_epoch: int) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["epoch"]) <= up_to_epoch]


def pretrain(
    train_set: ImageSet,
    out_dir: str | Path,
    *,
    method: str,
    seed: int = 0,
    encoder: str = "resnet18",
    width: int = 64,
    stem: str = "cifar",
    projection_dim: int = 128,
    epochs: int = 200,
    batch_size: int = 256,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    min_lr_ratio: float = 0.001,
    warmup_epochs: int = 0,
    reach_min_at_last: bool = False,
    temperature: float = 0.07,
    base_temperature: float | None = None,
    loss_form: str = "out",
    views: int = 2,
    crop_scale_min: float = 0.2,
    checkpoint_epochs: Sequence[int] = (),
    checkpoint_every: int = 0,
    sync_bn: bool = False,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    record: dict[str, Any] | None = None,
    progress: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> Path:
    """Pretrain an encoder on ``train_set``; return the path of the final encoder checkpoint.

    Resumes from the last complete checkpoint in ``out_dir`` if there is one. ``record`` is
    stored in every sidecar (e.g. the study config). ``precision`` is "fp32" (no autocast) or
    "bf16" (bfloat16 autocast on ``device``); the caller resolves any "auto". ``compile=True``
    runs the model through ``torch.compile`` (falling back to eager, with a warning, where that
    fails); set TORCHINDUCTOR_CACHE_DIR to share compiled code between runs. Under ``torchrun`` each rank trains on
    its share of every global batch and the loss sees the gathered global batch.
    """
    out_dir = Path(out_dir)
    device = torch.device(device)
    objective = get_objective(method)
    autocast = precision_autocast(precision, device)  # checks the name before any work
    n_views = views if objective.views > 1 else 1
    rank, world = dist.rank(), dist.world_size()
    is_main = rank == 0

    torch.manual_seed(seed)  # weight init
    channels = train_set.images.shape[-1]
    net = build_encoder(encoder, width=width, mean=train_set.mean, std=train_set.std, in_channels=channels, **stem_options({"stem": stem}))
    if objective.head == "projection":
        head: nn.Module = projection_head(net.feature_dim, out_dim=projection_dim)
    else:
        head = linear_classifier(net.feature_dim, train_set.num_classes)
    model = nn.Sequential(net, head)
    if sync_bn and world > 1:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif is_main:
            log.warning("pretrain.sync_bn needs CUDA; BatchNorm statistics stay per process on %s", device)
    # channels_last: oneDNN's NHWC convolutions and BatchNorm are faster on CPU too (1.1-1.3x per
    # step at widths 8-16, benchmarks/results/profile_quick.md); the math is the same, the
    # rounding of the convolutions not bit for bit.
    model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator(device=device).manual_seed(seed)

    arch = architecture(encoder, width, channels, net.feature_dim, getattr(net, "stem_architecture", None))
    meta_base = {
        "stage": "pretrain",
        "method": method,
        "seed": seed,
        "epochs": epochs,
        "architecture": arch,
        "normalization": {"mean": list(train_set.mean), "std": list(train_set.std)},
        "dataset": train_set.name,
        "settings": {"lr": lr, "batch_size": batch_size, "views": n_views, "world_size": world,
                     "temperature": temperature if objective.head == "projection" else None,  # SupCE has none
                     "precision": precision, "reach_min_at_last": reach_min_at_last, "compile": compile},
        "generator_device": device.type,  # a CUDA generator's state cannot be restored into a CPU one
        "record": record or {},
    }

    def save(epoch: int) -> None:
        if not is_main:
            return
        state = {
            "encoder": net.state_dict(),
            "head": head.state_dict(),
            "optimizer": {f"{i}": optimizer.state[p]["momentum_buffer"] for i, p in enumerate(model.parameters()) if "momentum_buffer" in optimizer.state[p]},
            "rng": {"generator": generator.get_state()},
        }
        save_checkpoint(out_dir / "checkpoints" / checkpoint_name(epoch), state, {**meta_base, "epoch": epoch})

    start_epoch = 0
    resume_from = latest_checkpoint(out_dir)
    if resume_from is not None:
        tensors, meta = read_checkpoint(resume_from)
        if meta.get("method") != method or meta.get("seed") != seed:
            raise ValueError(f"{out_dir} holds a {meta.get('method')} seed {meta.get('seed')} run, not {method} seed {seed}")
        load_state(net, subset(tensors, "encoder"), resume_from, meta.get("architecture"))
        load_state(head, subset(tensors, "head"), resume_from, meta.get("architecture"))
        for i, p in enumerate(model.parameters()):
            buf = tensors.get(f"optimizer.{i}")
            if buf is not None:
                optimizer.state[p]["momentum_buffer"] = buf.to(device)
        saved_device = _generator_device(meta, tensors["rng.generator"])
        if saved_device != device.type:
            raise CheckpointError(
                f"{resume_from} was written by a run on {saved_device} and its random-number state cannot be "
                f"restored on {device.type}: resume on {saved_device}, or start a new --out")
        generator.set_state(tensors["rng.generator"])
        start_epoch = int(meta["epoch"])
        if is_main:
            log.info("resuming %s seed %d from epoch %d", method, seed, start_epoch)
    else:
        save(0)

    save_at = set(checkpoint_epochs) | {epochs}
    if checkpoint_every > 0:
        save_at |= set(range(checkpoint_every, epochs + 1, checkpoint_every))
    metrics_path = out_dir / "metrics.csv"
    rows = _read_metrics(metrics_path, start_epoch) if is_main else []

    ddp_model: nn.Module = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    forward = compiled_or_eager(ddp_model) if compile else ddp_model

    images = torch.from_numpy(train_set.images).permute(0, 3, 1, 2).contiguous().to(device)  # (N, C, H, W) uint8
    labels = torch.from_numpy(train_set.labels).to(device)
    n_samples = len(labels)
    # Every rank needs at least one sample of a last batch, and one sample alone breaks BatchNorm.
    min_batch = 2 * world
    steps_per_epoch = len(batches(torch.arange(n_samples), batch_size, min_batch))
    model.train()

    with progress_bar((epochs - start_epoch) * steps_per_epoch, f"pretrain {method} seed {seed}", progress and is_main) as advance:
        for epoch in range(start_epoch + 1, epochs + 1):
            epoch_lr = cosine_lr(epoch - 1, epochs, lr, min_lr_ratio, warmup_epochs, reach_min_at_last)
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr
            started, losses, sizes = time.perf_counter(), [], []
            permutation = torch.randperm(n_samples, generator=generator, device=device)
            for batch in batches(permutation, batch_size, min_batch):
                # Every rank augments the whole global batch with the shared generator, so the
                # views (and the generator's state) are those of a single-process run.
                x = make_views(images[batch], objective.augmentation, n_views, generator,
                               size=images.shape[-1], crop_scale=(crop_scale_min, 1.0))
                y = labels[batch]
                if world > 1:  # then each rank keeps an equal share of it
                    keep = torch.arange(len(batch) - len(batch) % world, device=device)[rank::world]
                    x, y = x[keep], y[keep]
                with autocast:
                    outputs = forward(x.flatten(0, 1))  # (B*V, D)
                    outputs = outputs.float().view(len(y), n_views, -1)
                    if world > 1:
                        outputs, y = dist.gather_with_grad(outputs), dist.gather(y)
                    loss = objective.loss(outputs, y, temperature=temperature, base_temperature=base_temperature, form=loss_form)
                optimizer.zero_grad(set_to_none=True)
                (loss * world if world > 1 else loss).backward()  # DDP averages over ranks
                optimizer.step()
                losses.append(loss.detach())  # no host sync per step; checked once per epoch
                sizes.append(len(y))
                advance(1)
            losses_cpu = torch.stack(losses).float().cpu()  # the epoch's one sync
            if not bool(torch.isfinite(losses_cpu).all()):
                first = int((~torch.isfinite(losses_cpu)).nonzero()[0, 0])
                raise NonFiniteError(
                    f"pretraining {method} seed {seed}: loss is {losses_cpu[first].item()} at epoch {epoch} "
                    f"(step {(epoch - 1) * steps_per_epoch + first + 1}); lower pretrain.lr.{method} (now {lr:g}), "
                    f"add pretrain.warmup_epochs, or use precision fp32 if it is bf16")
            seen = sum(sizes)
            epoch_loss = float(losses_cpu.double() @ torch.tensor(sizes, dtype=torch.float64)) / seen
            seconds = time.perf_counter() - started
            rows.append({"epoch": epoch, "lr": epoch_lr, "loss": epoch_loss, "images_per_s": seen / seconds, "seconds": seconds})
            if is_main:
                write_csv(metrics_path, rows, METRIC_FIELDS)
                if on_epoch is not None:  # e.g. TensorBoard scalars: the epoch's metrics row
                    on_epoch(rows[-1])
                log.info("%s seed %d epoch %d/%d loss %.4f", method, seed, epoch, epochs, epoch_loss)
            if epoch in save_at:
                save(epoch)

    final = out_dir / "encoder.safetensors"
    if is_main:
        save_checkpoint(final, {"encoder": net.state_dict()}, {**meta_base, "epoch": epochs, "kind": "encoder"})
    return final


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
