"""Validation of a resolved :class:`~contrastlab.config.StudyConfig`: every value a kernel would
otherwise reject minutes later, checked before any work starts, as one line naming the key and
the valid range.

The entry points that hand out a checked config live here, so the arrow runs one way
(this module imports :mod:`.config`, never the reverse): :func:`load_config` (a preset or YAML
file plus overrides, checked) and :func:`check_config` (a config read by
:func:`contrastlab.config.read_config`, checked)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Optional

from .config import (METHOD_SECTIONS, DataConfig, FinetuneConfig, LandscapeConfig, ModelConfig, PretrainConfig, ReportConfig,
                     RobustnessConfig, SharpnessConfig, StudyConfig, read_config)
from .errors import ConfigError
from .families import BUILTIN_FAMILIES, FAMILIES, entry_name, family_of

PRECISIONS = ("auto", "fp32", "bf16")
STEMS = ("cifar", "imagenet")  # models.STEMS, without importing torch here
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


def load_config(preset: str = "quick", overrides: list[str] | None = None) -> StudyConfig:
    """Resolve a preset name or YAML path plus ``key=value`` overrides into a checked StudyConfig."""
    return check_config(read_config(preset, overrides))


def check_config(config: StudyConfig) -> StudyConfig:
    """Resolve a task spec into class lists and run every check of this module; returns ``config``."""
    resolve_tasks_in(config)
    resolve_checkpoints_in(config)
    validate(config)
    return config


def resolve_checkpoints_in(config: StudyConfig) -> None:
    """Make the checkpoint paths of external ``methods`` entries absolute (relative to the current
    directory), in place: the run directory's config.yaml then names the files whatever the directory it resumes from."""
    from .study.external import resolve_path

    for entry in config.methods:
        checkpoints = entry.get("checkpoints") if isinstance(entry, dict) else None
        if isinstance(checkpoints, list) and all(isinstance(c, str) and c for c in checkpoints):
            entry["checkpoints"] = [resolve_path(c) for c in checkpoints]


def resolve_tasks_in(config: StudyConfig) -> None:
    """Turn a task spec string ("random:K", "superclass:K") into lists of classes, in place."""
    d = config.data
    if isinstance(d.tasks, str):
        from .data import dataset_classes
        from .data.tasks import resolve_tasks

        d.tasks_spec = d.tasks
        d.tasks = resolve_tasks(d.tasks, dataset=d.downstream, num_classes=dataset_classes(d.downstream), seed=d.task_seed, ways=d.task_ways)
    elif not (isinstance(d.tasks, list) and d.tasks and all(isinstance(t, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in t) for t in d.tasks)):
        raise ConfigError(f"data.tasks must be a list of class lists like [[0,1,2,3,4]], 'random:K' or 'superclass:K', got {d.tasks!r}")


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
    check_methods(config)
    _check(bool(config.seeds), "seeds is empty; give at least one seed")
    _check(len(set(config.seeds)) == len(config.seeds), f"seeds must be distinct (a repeated seed reruns the same thing), got {list(config.seeds)}")
    _one_of("precision", config.precision, PRECISIONS)
    check_device(config.device)
    _check_data(config.data)
    _check_model(config.model)
    _check_pretrain(config.pretrain, config.data)
    _check_finetune(config.finetune)
    _check_analysis(config)
    _check_report(config.report)
    _check_launcher_and_externals(config)


def _check_data(d: DataConfig) -> None:
    from .data import dataset_classes

    for key in ("image_size", "channels", "pretrain_per_class", "downstream_train_per_class", "downstream_test_per_class"):
        _at_least(f"data.{key}", getattr(d, key), 1)
    n_downstream = dataset_classes(d.downstream)
    for task in d.tasks:
        _check(len(task) >= 2 and len(set(task)) == len(task), f"task {task} needs at least two distinct classes")
        for c in task:
            _check(0 <= c < n_downstream, f"task {task}: class {c} is not a class of {d.downstream} (classes 0..{n_downstream - 1})")


def _check_model(m: ModelConfig) -> None:
    _at_least("model.width", m.width, 1)
    _one_of("model.stem", m.stem, STEMS)
    _check(m.stem == "cifar" or m.encoder == "resnet18", f"model.stem={m.stem} needs model.encoder=resnet18, got '{m.encoder}'")
    _at_least("model.projection_dim", m.projection_dim, 1)


def _check_pretrain(p: PretrainConfig, d: DataConfig) -> None:
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


def _check_finetune(f: FinetuneConfig) -> None:
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


def _check_analysis(config: StudyConfig) -> None:
    ways = min(len(t) for t in config.data.tasks)
    a = config.analysis
    _check_landscape(a.landscape, ways)
    _check_sharpness(a.sharpness, ways)
    _check_robustness(a.robustness, ways)
    _at_least("analysis.geometry.n_components", a.geometry.n_components, 1)
    _one_of("analysis.geometry.truth_copies", a.geometry.truth_copies, ("one", "per_seed"))
    p = config.pretrain
    saved = saved_checkpoint_epochs(p.epochs, p.checkpoint_epochs, p.checkpoint_every)
    for epoch in a.pretraining_trajectory.epochs or []:
        _check(epoch in saved, f"analysis.pretraining_trajectory.epochs: pretraining saves no checkpoint at epoch {epoch}; "
                               f"saved: {saved} (add it to pretrain.checkpoint_epochs)")
    _at_least("analysis.pretraining_trajectory.max_checkpoints", a.pretraining_trajectory.max_checkpoints, 2, " (first and last)")
    rep = a.representation
    _at_least("analysis.representation.samples", rep.samples, 4, " (CKA needs a few samples)")
    _at_least("analysis.representation.pairs", rep.pairs, 2, " (uniformity needs two images)")


def _check_landscape(ls: LandscapeConfig, ways: int) -> None:
    _check(ls.grid >= 3 and ls.grid % 2 == 1, f"analysis.landscape.grid must be odd and >= 3 (so that θ* is a grid point), got {ls.grid}")
    _positive_finite("analysis.landscape.span", ls.span)
    _one_of("analysis.landscape.params", ls.params, LANDSCAPE_PARAMS)
    _at_least("analysis.landscape.samples", ls.samples, ways, " (one sample per class of a task)")
    _at_least("analysis.landscape.batch_size", ls.batch_size, 1)
    _one_of("analysis.landscape.direction_seed", ls.direction_seed, ("shared", "per_model"))
    _one_of("analysis.landscape.ignore", ls.ignore, ("biasbn", "none"))
    _one_of("analysis.landscape.normalization", ls.normalization, ("filter", "layer", "none"))


def _check_sharpness(sh: SharpnessConfig, ways: int) -> None:
    _one_of("analysis.sharpness.params", sh.params, LANDSCAPE_PARAMS)
    _at_least("analysis.sharpness.samples", sh.samples, ways, " (one sample per class of a task)")
    _at_least("analysis.sharpness.top_k", sh.top_k, 1)
    _at_least("analysis.sharpness.iters", sh.iters, sh.top_k, " (Lanczos needs at least top_k steps)")
    _at_least("analysis.sharpness.trace_samples", sh.trace_samples, 3, " (Hutch++ splits its probes in three)")
    _one_of("analysis.sharpness.normalization", sh.normalization, ("filter", "none"))
    _at_least("analysis.sharpness.batch_size", sh.batch_size, 1)
    _check(0 <= sh.tol < 1, f"analysis.sharpness.tol must be in [0, 1), got {sh.tol}")


def _check_robustness(r: RobustnessConfig, ways: int) -> None:
    for attack in r.attacks:
        _one_of("analysis.robustness.attacks", attack, ("fgsm", "pgd"))
    _check(bool(r.eps_255) and all(math.isfinite(e) and e >= 0 for e in r.eps_255),
           f"analysis.robustness.eps_255 must be finite numbers >= 0, got {list(r.eps_255)}")
    _one_of("analysis.robustness.space", r.space, ("pixel", "normalized"))
    _at_least("analysis.robustness.pgd_steps", r.pgd_steps, 1)
    _at_least("analysis.robustness.samples", r.samples, ways, " (one sample per class of a task)")
    _at_least("analysis.robustness.batch_size", r.batch_size, 1)


def _check_report(report: ReportConfig) -> None:
    _check(0 < report.confidence < 1, f"report.confidence must be in (0, 1), got {report.confidence}")
    _check(report.claims.flatness_margin > 1, f"report.claims.flatness_margin must be > 1, got {report.claims.flatness_margin}")
    _positive_finite("report.claims.robustness_eps_max_255", report.claims.robustness_eps_max_255)
    _positive_finite("report.claims.accuracy_margin", report.claims.accuracy_margin)
    _one_of("report.claims.adjust", report.claims.adjust, ("holm", "none"))


def _check_launcher_and_externals(config: StudyConfig) -> None:
    _one_of("launcher.kind", config.launcher.kind, ("sequential", "local", "slurm"))
    _at_least("launcher.jobs", config.launcher.jobs, 1)
    if any(isinstance(e, Mapping) for e in config.methods):  # last: reads every external checkpoint once
        from .study.encoders import check_external_checkpoints

        d = config.data
        check_external_checkpoints(config, d.channels if d.channels is not None else dataset_channels(d.downstream))


def check_external_entry(entry: Mapping, config: StudyConfig) -> None:
    """The shape of one external entry of ``methods`` (its files are checked by study/encoders.py)."""
    from .study.external import ENTRY_KEYS

    name = entry.get("name")
    _check(isinstance(name, str) and bool(name.strip()), f"a methods entry given as a mapping needs a 'name', got {dict(entry)}")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    _check(not unknown, f"methods entry '{name}': unknown key '{unknown[0] if unknown else ''}'; valid: {', '.join(ENTRY_KEYS)}")
    _check(name not in BUILTIN_FAMILIES, f"methods entry '{name}': the name of a built-in method; give the external encoder another name")
    _check("family" in entry, f"methods entry '{name}' needs a family: one of {', '.join(FAMILIES)}")
    family_of(entry)
    checkpoints = entry.get("checkpoints")
    _check(isinstance(checkpoints, list) and bool(checkpoints) and all(isinstance(c, str) and c for c in checkpoints),
           f"methods entry '{name}': checkpoints must be a list of files (one per seed, or one for every seed), got {checkpoints!r}")
    _check(len(checkpoints) in (1, len(config.seeds)),
           f"methods entry '{name}' has {len(checkpoints)} checkpoints for {len(config.seeds)} seeds {list(config.seeds)}; "
           "give one per seed, in the order of seeds, or exactly one for every seed")
    _check(("mean" in entry) == ("std" in entry), f"methods entry '{name}': give both mean and std, or neither")
    channels = config.data.channels if config.data.channels is not None else dataset_channels(config.data.downstream)
    for key in ("mean", "std"):
        values = entry.get(key)
        if values is not None:
            _check(isinstance(values, list) and len(values) == channels and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values),
                   f"methods entry '{name}': {key} must be {channels} numbers (one per channel of {config.data.downstream}), got {values!r}")
    _check(all(v > 0 for v in entry.get("std") or [1]), f"methods entry '{name}': std must be > 0, got {entry.get('std')}")
    padding = entry.get("stem_padding")
    _check(padding is None or (isinstance(padding, int) and padding >= 0), f"methods entry '{name}': stem_padding must be an integer >= 0, got {padding!r}")


def check_methods(config: StudyConfig) -> None:
    """The methods exist (built-in names, or external entries of the right shape), each built-in one has a
    learning rate (and a temperature where it uses one), and the settings of each method with a section of
    its own are in range."""
    from .train.methods import METHODS

    valid = ", ".join(sorted(METHODS))
    _check(bool(config.methods), "methods is empty; give at least one of " + valid)
    for entry in config.methods:
        if isinstance(entry, Mapping):
            check_external_entry(entry, config)
    names = [entry_name(e) for e in config.methods]
    _check(len(set(names)) == len(names), f"methods repeats a method: {names}")
    p = config.pretrain
    for method in (e for e in config.methods if not isinstance(e, Mapping)):
        _check(isinstance(method, str) and method in METHODS,
               f"unknown method '{method}' in methods; valid: {valid} (or a mapping with name, family, checkpoints)")
        _check(method in p.lr, f"pretrain.lr has no learning rate for method '{method}'")
        _positive_finite(f"pretrain.lr.{method}", p.lr[method])
        if METHODS[method].uses_temperature:
            _check(method in p.temperature, f"pretrain.temperature has no temperature for method '{method}'")
            _positive_finite(f"pretrain.temperature.{method}", p.temperature[method])
        if method in METHOD_SECTIONS:
            check_own_settings(f"pretrain.{method}", getattr(p, method))


def check_own_settings(prefix: str, own) -> None:
    """Ranges of a method's own section (pretrain.byol, pretrain.mocov2, ...); fields it lacks are skipped."""
    for key in ("projector_hidden", "projector_out", "predictor_hidden"):
        _at_least(f"{prefix}.{key}", getattr(own, key, None), 1)
    _one_of(f"{prefix}.optimizer", own.optimizer, ("sgd", "lars"))
    _positive_finite(f"{prefix}.lars_eta", own.lars_eta)
    _check(math.isfinite(own.weight_decay) and own.weight_decay >= 0, f"{prefix}.weight_decay must be a finite number >= 0, got {own.weight_decay}")
    _at_least(f"{prefix}.warmup_epochs", own.warmup_epochs, 0)
    if hasattr(own, "tau_base"):
        _check(0 <= own.tau_base <= own.tau_final <= 1,
               f"{prefix}.tau_base and tau_final must satisfy 0 <= tau_base <= tau_final <= 1, got {own.tau_base} and {own.tau_final}")
    for key in ("lambd", "scale", "sim_weight", "var_weight", "cov_weight"):
        if hasattr(own, key):
            value = getattr(own, key)
            _check(math.isfinite(value) and value >= 0, f"{prefix}.{key} must be a finite number >= 0, got {value}")
    _at_least(f"{prefix}.queue_size", getattr(own, "queue_size", None), 1)


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
