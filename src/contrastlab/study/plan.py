"""The study as a list of units of work with dependencies.

Every unit owns one folder of the run directory (its ``id``, laid out by :mod:`contrastlab.rundir`)
and is finished exactly when that folder's manifest ``done.json`` carries the unit's ``key`` (a
hash of every setting the unit's result depends on, its upstream units' keys included) and its
files are unchanged. Only this module knows the order of the stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import StudyConfig, config_hash, to_dict
from ..rundir import PER_RUN_KINDS, task_name, unit_id

RANDOM = "random"  # the random-init baseline, probed like a method
ANALYSES = PER_RUN_KINDS

__all__ = ["ANALYSES", "RANDOM", "Unit", "plan_units", "study_methods", "task_name"]


@dataclass(frozen=True)
class Unit:
    """One unit of work: a stage for one (method, seed, task), or a per-task aggregate."""

    kind: str  # "pretrain" | "finetune" | one of ANALYSES | "geometry" | "trajectory" | "representation" | "alignment"
    id: str  # its folder, relative to the run directory
    key: str  # hash of everything its result depends on
    method: str | None = None
    seed: int | None = None
    task: int | None = None  # index into config.data.tasks
    deps: tuple[str, ...] = field(default=())
    # Files of upstream units this unit reads, by role ("encoder", "probe", "snapshots", ...), relative to the run directory.
    inputs: tuple[tuple[str, str], ...] = field(default=())

    def folder(self, run_dir: Path) -> Path:
        return run_dir / self.id


def study_methods(config: StudyConfig) -> list[str]:
    """The pretraining methods plus the random-init baseline when enabled."""
    return list(config.methods) + ([RANDOM] if config.random_init_baseline else [])


def plan_units(config: StudyConfig) -> list[Unit]:
    """Every unit of the study, each after the units it depends on."""
    data = to_dict(config.data)
    pretrain_data = {k: data[k] for k in ("pretrain", "image_size", "channels", "pretrain_per_class", "seed")}
    downstream_data = {k: data[k] for k in ("downstream", "image_size", "channels", "downstream_train_per_class", "downstream_test_per_class", "seed")}
    model, pretrain = to_dict(config.model), to_dict(config.pretrain)
    pretrain.pop("lr")
    # Where and how units compute changes their numbers (bf16, TF32, CUDA kernels): part of every key.
    execution = {"device": config.device, "precision": config.precision}
    units: list[Unit] = []
    finetune_keys: dict[int, list[str]] = {i: [] for i in range(len(config.data.tasks))}
    finetune_ids: dict[int, list[str]] = {i: [] for i in range(len(config.data.tasks))}
    for method in study_methods(config):
        for seed in config.seeds:
            if method == RANDOM:
                spec = {"data": pretrain_data, "model": model, "seed": seed, "method": method}
                if config.pretrain.normalization != "dataset":  # its encoder's statistics (absent by default: keys stay stable)
                    spec["normalization"] = config.pretrain.normalization
            else:
                spec = {"data": pretrain_data, "model": model, "pretrain": pretrain, "lr": config.pretrain.lr[method], "method": method,
                        "seed": seed, "execution": execution}
            pre = Unit("pretrain", unit_id("pretrain", method, seed), config_hash(spec), method, seed)
            encoder = ("encoder", f"{pre.id}/encoder.safetensors")
            units.append(pre)
            for t, classes in enumerate(config.data.tasks):
                fine_spec = {"pretrain": pre.key, "data": downstream_data, "finetune": to_dict(config.finetune), "classes": classes,
                             "execution": execution}
                fine = Unit("finetune", unit_id("finetune", method, seed, classes), config_hash(fine_spec), method, seed, t, (pre.id,),
                            (encoder,))
                units.append(fine)
                finetune_keys[t].append(fine.key)
                finetune_ids[t].append(fine.id)
                if method == RANDOM:
                    continue
                for analysis in ANALYSES:
                    settings = getattr(config.analysis, analysis)
                    if settings.enabled:
                        key = config_hash({"finetune": fine.key, analysis: to_dict(settings), "execution": execution})
                        units.append(Unit(analysis, unit_id(analysis, method, seed, classes), key, method, seed, t, (fine.id,),
                                          (encoder, ("probe", f"{fine.id}/probe.safetensors"))))
    if config.analysis.geometry.enabled:
        for t, classes in enumerate(config.data.tasks):
            key = config_hash({"finetune": finetune_keys[t], "geometry": to_dict(config.analysis.geometry), "execution": execution})
            units.append(Unit("geometry", unit_id("geometry", classes=classes), key, task=t, deps=tuple(finetune_ids[t]),
                              inputs=tuple(("snapshots", f"{i}/snapshots.npy") for i in finetune_ids[t])))
    units += representation_units(config, units, pretrain_data, downstream_data, execution)
    position = {u.id: i for i, u in enumerate(units)}
    return [with_input_deps(u, position) for u in units]


def with_input_deps(unit: Unit, position: dict[str, int]) -> Unit:
    """``unit`` depending on every unit whose files it reads (its ``inputs``) besides its own
    ``deps``, in plan order (``position``: unit id -> index in the plan): an analysis waits for the
    pretraining whose encoder it loads, not only for its probe's finetune unit."""
    from dataclasses import replace

    deps = set(unit.deps)
    for _, path in unit.inputs:
        parts = path.split("/")
        owner = next(("/".join(parts[:k]) for k in range(len(parts) - 1, 0, -1) if "/".join(parts[:k]) in position), None)
        if owner is not None and owner != unit.id:
            deps.add(owner)
    ordered = tuple(sorted(deps, key=lambda d: position.get(d, -1)))
    return unit if ordered == unit.deps else replace(unit, deps=ordered)


def count_units(config: StudyConfig) -> int:
    """How many units :func:`plan_units` plans, counted without planning them (a study of very
    many tasks is refused before its units are built)."""
    a = config.analysis
    methods = study_methods(config)
    trained = len(config.methods)
    seeds, tasks = len(config.seeds), len(config.data.tasks)
    per_probe = sum(getattr(a, kind).enabled for kind in ANALYSES) + a.pretraining_trajectory.enabled
    pretrains = len(methods) * seeds
    return (pretrains * (1 + tasks) + trained * seeds * tasks * per_probe + tasks * a.geometry.enabled
            + (pretrains + tasks) * a.representation.enabled)


def representation_units(config: StudyConfig, planned: list[Unit], pretrain_data: dict, downstream_data: dict,
                         execution: dict) -> list[Unit]:
    """Beyond the paper: probes along pretraining ("trajectory", per method, seed and task), CKA between
    every encoder of a task ("representation"), alignment / uniformity / rank per encoder ("alignment").
    ``planned``: the pretrain and finetune units planned so far."""
    from ..config_checks import trajectory_epochs

    a, p, units = config.analysis, config.pretrain, []
    pretrains = [u for u in planned if u.kind == "pretrain"]
    finetunes = {(u.method, u.seed, u.task): u for u in planned if u.kind == "finetune"}
    trajectory = a.pretraining_trajectory
    epochs = trajectory_epochs(config)
    for pre in pretrains:
        if trajectory.enabled and pre.method != RANDOM:
            checkpoints = tuple(("checkpoint", f"{pre.id}/checkpoints/epoch_{e:04d}.safetensors") for e in epochs)
            for t, classes in enumerate(config.data.tasks):
                # Linear probes the finetune units fitted already (final encoder; random init = epoch 0), which the
                # stage reads instead of refitting when their encoder is the checkpoint's: it runs after them.
                reusable = [u for u in (finetunes.get((pre.method, pre.seed, t)), finetunes.get((RANDOM, pre.seed, t)))
                            if u is not None and config.finetune.mode == "linear"]
                reuse = tuple(pair for u in reusable
                              for pair in (("finetune", f"{u.id}/result.json"), ("finetune_encoder", dict(u.inputs)["encoder"])))
                key = config_hash({"pretrain": pre.key, "data": downstream_data, "finetune": to_dict(config.finetune), "classes": classes,
                                   "trajectory": to_dict(trajectory), "epochs": epochs, "execution": execution,
                                   "reuses": [u.key for u in reusable]})
                units.append(Unit("trajectory", unit_id("trajectory", pre.method, pre.seed, classes), key, pre.method, pre.seed, t,
                                  (pre.id, *(u.id for u in reusable)), checkpoints + reuse))
        if a.representation.enabled:
            settings = {k: to_dict(a.representation)[k] for k in ("pairs", "seed")}
            key = config_hash({"pretrain": pre.key, "data": pretrain_data, "augmentation": p.crop_scale_min, "alignment": settings,
                               "execution": execution})
            units.append(Unit("alignment", unit_id("alignment", pre.method, pre.seed), key, pre.method, pre.seed, deps=(pre.id,),
                              inputs=(("encoder", f"{pre.id}/encoder.safetensors"),)))
    if a.representation.enabled:
        for t, classes in enumerate(config.data.tasks):
            key = config_hash({"pretrain": [u.key for u in pretrains], "data": downstream_data, "classes": classes,
                               "analysis_split": config.finetune.analysis_split, "representation": to_dict(a.representation),
                               "execution": execution})
            units.append(Unit("representation", unit_id("representation", classes=classes), key, task=t, deps=tuple(u.id for u in pretrains),
                              inputs=tuple(("encoder", f"{u.id}/encoder.safetensors") for u in pretrains)))
    return units


def single_unit(config: StudyConfig, kind: str, *, method: str | None = None, seed: int | None = None, task: int | None = None,
                inputs: dict[str, str] | None = None) -> Unit:
    """One unit run on its own (``contrastlab pretrain/finetune/analyze``) in its own output folder:
    its inputs are files given by the user, its key covers them and every setting of its stage."""
    from .context import SECTIONS

    inputs = inputs or {}
    spec = {"kind": kind, "method": method, "seed": seed, "settings": to_dict(SECTIONS[kind](config)), "data": to_dict(config.data),
            "model": to_dict(config.model), "inputs": {role: str(path) for role, path in inputs.items()},
            "execution": {"device": config.device, "precision": config.precision}}
    return Unit(kind, ".", config_hash(spec), method, seed, task, inputs=tuple(inputs.items()))
