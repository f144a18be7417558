"""Validation of a resolved :class:`~contrastlab.config.StudyConfig`: every value a kernel would
otherwise reject minutes later, checked before any work starts, as one line naming the key and
the valid range."""

from __future__ import annotations

import math
from typing import Optional

from .config import StudyConfig
from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
LANDSCAPE_PARAMS = ("all", "probe")
GRAYSCALE_DATASETS = ("fashion-mnist", "digits")  # every other registered dataset has 3 channels


def dataset_channels(name: str) -> int:
    """The channel count of a registered dataset without loading it."""
    return 1 if name in GRAYSCALE_DATASETS else 3


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive_finite(name: str, value: float) -> None:
    _check(isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{name} must be a finite number > 0, got {value}")


def _at_least(name: str, value: Optional[int], minimum: int, why: str = "") -> None:
    if value is not None:
        _check(value >= minimum, f"{name} must be at least {minimum}{why}, got {value}")


def _one_of(name: str, value: str, valid: tuple[str, ...]) -> None:
    _check(value in valid, f"{name} must be one of {', '.join(valid)}, got '{value}'")


def check_device(name: str) -> None:
    """A device that exists on this machine ('auto' always does); ConfigError otherwise."""
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device '{name}' is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' is not available: this machine has no usable CUDA GPU; use device=cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        _check(torch.backends.mps.is_available(), f"device '{name}' is not available on this machine; use device=cpu or auto")
    elif device.type != "cpu":
        raise ConfigError(f"device '{name}' is not supported; use auto, cpu, cuda or cuda:N")


def validate(config: StudyConfig) -> None:
    """Every check a kernel would otherwise make minutes later: one line naming the key and the valid range."""
    from .data import dataset_classes
    from .objectives import OBJECTIVES

    _check(bool(config.methods), "methods is empty; give at least one of " + ", ".join(sorted(OBJECTIVES)))
    _check(len(set(config.methods)) == len(config.methods), f"methods repeats a method: {list(config.methods)}")
    for method in config.methods:
        _check(method in OBJECTIVES, f"unknown method '{method}' in methods; valid: {', '.join(sorted(OBJECTIVES))}")
        _check(method in config.pretrain.lr, f"pretrain.lr has no learning rate for method '{method}'")
        _positive_finite(f"pretrain.lr.{method}", config.pretrain.lr[method])
        if OBJECTIVES[method].head == "projection":
            _check(method in config.pretrain.temperature, f"pretrain.temperature has no temperature for method '{method}'")
            _positive_finite(f"pretrain.temperature.{method}", config.pretrain.temperature[method])
    _check(bool(config.seeds), "seeds is empty; give at least one seed")
    _check(len(set(config.seeds)) == len(config.seeds), f"seeds must be distinct (a repeated seed reruns the same thing), got {list(config.seeds)}")
    _one_of("precision", config.precision, PRECISIONS)
    check_device(config.device)

    d = config.data
    for key in ("image_size", "channels", "pretrain_per_class", "downstream_train_per_class", "downstream_test_per_class"):
        _at_least(f"data.{key}", getattr(d, key), 1)
    n_downstream = dataset_classes(d.downstream)
    for task in d.tasks:
        _check(len(task) >= 2 and len(set(task)) == len(task), f"task {task} needs at least two distinct classes")
        for c in task:
            _check(0 <= c < n_downstream, f"task {task}: class {c} is not a class of {d.downstream} (classes 0..{n_downstream - 1})")

    m = config.model
    _at_least("model.width", m.width, 1)
    _at_least("model.projection_dim", m.projection_dim, 1)

    p = config.pretrain
    _at_least("pretrain.epochs", p.epochs, 1)
    _at_least("pretrain.batch_size", p.batch_size, 2, " (a contrastive batch needs negatives; BatchNorm needs two samples)")
    _at_least("pretrain.views", p.views, 2)
    _at_least("pretrain.warmup_epochs", p.warmup_epochs, 0)
    _at_least("pretrain.checkpoint_every", p.checkpoint_every, 0)
    _check(0 <= p.momentum < 1, f"pretrain.momentum must be in [0, 1), got {p.momentum}")
    _check(math.isfinite(p.weight_decay) and p.weight_decay >= 0, f"pretrain.weight_decay must be a finite number >= 0, got {p.weight_decay}")
    _check(0 <= p.min_lr_ratio <= 1, f"pretrain.min_lr_ratio must be in [0, 1], got {p.min_lr_ratio}")
    _check(0 < p.crop_scale_min <= 1, f"pretrain.crop_scale_min must be in (0, 1], got {p.crop_scale_min}")
    if p.base_temperature is not None:
        _positive_finite("pretrain.base_temperature", p.base_temperature)
    _one_of("pretrain.loss_form", p.loss_form, ("out", "in"))
    _one_of("pretrain.normalization", p.normalization, ("dataset", "original"))
    _one_of("pretrain.schedule_end", p.schedule_end, ("before_min", "at_min"))
    if p.normalization == "original":  # the original's hard-coded std has three entries (RGB)
        channels = d.channels if d.channels is not None else dataset_channels(d.pretrain)
        _check(channels == 3, f"pretrain.normalization=original needs 3-channel data (its std is the RGB triple "
                              f"(0.2023, 0.1994, 0.2010)), but {d.pretrain} has {channels} channel(s); use pretrain.normalization=dataset")
    for epoch in p.checkpoint_epochs:
        _check(0 <= epoch <= p.epochs, f"pretrain.checkpoint_epochs: {epoch} is not an epoch of 0..{p.epochs}")

    f = config.finetune
    _one_of("finetune.mode", f.mode, ("linear", "full"))
    _one_of("finetune.analysis_split", f.analysis_split, ("train", "test"))
    _one_of("finetune.normalization", f.normalization, ("pretrain", "downstream"))
    _one_of("finetune.schedule_end", f.schedule_end, ("before_min", "at_min"))
    _at_least("finetune.epochs", f.epochs, 1)
    _at_least("finetune.batch_size", f.batch_size, 1)
    _at_least("finetune.knn_k", f.knn_k, 1)
    _positive_finite("finetune.lr", f.lr)
    _check(0 <= f.momentum < 1, f"finetune.momentum must be in [0, 1), got {f.momentum}")
    _check(math.isfinite(f.weight_decay) and f.weight_decay >= 0, f"finetune.weight_decay must be a finite number >= 0, got {f.weight_decay}")
    _check(0 <= f.min_lr_ratio <= 1, f"finetune.min_lr_ratio must be in [0, 1], got {f.min_lr_ratio}")

    ways = min(len(t) for t in d.tasks)
    a = config.analysis
    ls = a.landscape
    _check(ls.grid >= 3 and ls.grid % 2 == 1, f"analysis.landscape.grid must be odd and >= 3 (so that θ* is a grid point), got {ls.grid}")
    _positive_finite("analysis.landscape.span", ls.span)
    _one_of("analysis.landscape.params", ls.params, LANDSCAPE_PARAMS)
    _at_least("analysis.landscape.samples", ls.samples, ways, " (one sample per class of a task)")
    _at_least("analysis.landscape.batch_size", ls.batch_size, 1)
    _one_of("analysis.landscape.direction_seed", ls.direction_seed, ("shared", "per_model"))
    _one_of("analysis.landscape.ignore", ls.ignore, ("biasbn", "none"))
    _one_of("analysis.landscape.normalization", ls.normalization, ("filter", "layer", "none"))
    sh = a.sharpness
    _one_of("analysis.sharpness.params", sh.params, LANDSCAPE_PARAMS)
    _at_least("analysis.sharpness.samples", sh.samples, ways, " (one sample per class of a task)")
    _at_least("analysis.sharpness.top_k", sh.top_k, 1)
    _at_least("analysis.sharpness.iters", sh.iters, sh.top_k, " (Lanczos needs at least top_k steps)")
    _at_least("analysis.sharpness.trace_samples", sh.trace_samples, 3, " (Hutch++ splits its probes in three)")
    _one_of("analysis.sharpness.normalization", sh.normalization, ("filter", "none"))
    _at_least("analysis.sharpness.batch_size", sh.batch_size, 1)
    _check(0 <= sh.tol < 1, f"analysis.sharpness.tol must be in [0, 1), got {sh.tol}")
    r = a.robustness
    for attack in r.attacks:
        _one_of("analysis.robustness.attacks", attack, ("fgsm", "pgd"))
    _check(bool(r.eps_255) and all(math.isfinite(e) and e >= 0 for e in r.eps_255),
           f"analysis.robustness.eps_255 must be finite numbers >= 0, got {list(r.eps_255)}")
    _one_of("analysis.robustness.space", r.space, ("pixel", "normalized"))
    _at_least("analysis.robustness.pgd_steps", r.pgd_steps, 1)
    _at_least("analysis.robustness.samples", r.samples, ways, " (one sample per class of a task)")
    _at_least("analysis.robustness.batch_size", r.batch_size, 1)
    _at_least("analysis.geometry.n_components", a.geometry.n_components, 1)
    _one_of("analysis.geometry.truth_copies", a.geometry.truth_copies, ("one", "per_seed"))
    saved = saved_checkpoint_epochs(p.epochs, p.checkpoint_epochs, p.checkpoint_every)
    for epoch in a.pretraining_trajectory.epochs or []:
        _check(epoch in saved, f"analysis.pretraining_trajectory.epochs: pretraining saves no checkpoint at epoch {epoch}; "
                               f"saved: {saved} (add it to pretrain.checkpoint_epochs)")
    _at_least("analysis.pretraining_trajectory.max_checkpoints", a.pretraining_trajectory.max_checkpoints, 2, " (first and last)")
    rep = a.representation
    _at_least("analysis.representation.samples", rep.samples, 4, " (CKA needs a few samples)")
    _at_least("analysis.representation.pairs", rep.pairs, 2, " (uniformity needs two images)")

    _check(0 < config.report.confidence < 1, f"report.confidence must be in (0, 1), got {config.report.confidence}")
    _check(config.report.claims.flatness_margin > 1, f"report.claims.flatness_margin must be > 1, got {config.report.claims.flatness_margin}")
    _positive_finite("report.claims.robustness_eps_max_255", config.report.claims.robustness_eps_max_255)
    _positive_finite("report.claims.accuracy_margin", config.report.claims.accuracy_margin)
    _one_of("report.claims.adjust", config.report.claims.adjust, ("holm", "none"))

    _one_of("launcher.kind", config.launcher.kind, ("sequential", "local", "slurm"))
    _at_least("launcher.jobs", config.launcher.jobs, 1)


def saved_checkpoint_epochs(epochs: int, checkpoint_epochs, checkpoint_every: int) -> list[int]:
    """The pretraining epochs that leave a checkpoint: 0, the chosen ones, every ``checkpoint_every``-th, the last."""
    saved = {0, epochs} | {e for e in checkpoint_epochs if 0 <= e <= epochs}
    if checkpoint_every > 0:
        saved |= set(range(checkpoint_every, epochs + 1, checkpoint_every))
    return sorted(saved)


def trajectory_epochs(config: StudyConfig) -> list[int]:
    """The pretraining epochs the trajectory units probe: ``epochs`` as given, else the saved
    checkpoints, thinned to ``max_checkpoints`` evenly spaced ones (the first and the last kept)."""
    t, p = config.analysis.pretraining_trajectory, config.pretrain
    if t.epochs:
        return sorted(set(t.epochs))
    saved = saved_checkpoint_epochs(p.epochs, p.checkpoint_epochs, p.checkpoint_every)
    if t.max_checkpoints is None or len(saved) <= t.max_checkpoints:
        return saved
    picks = {round(i * (len(saved) - 1) / (t.max_checkpoints - 1)) for i in range(t.max_checkpoints)}
    return [saved[i] for i in sorted(picks)]
