"""The study as a list of units of work with dependencies.

Every unit owns one folder of the run directory (its ``id``, laid out by :mod:`contrastlab.rundir`)
and is finished exactly when that folder's manifest ``done.json`` carries the unit's ``key`` (a
hash of every setting the unit's result depends on, its upstream units' keys included) and its
files are unchanged. Only this module knows the order of the stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import rundir
from ..config import METHOD_SECTIONS, StudyConfig, config_hash, to_dict
from ..families import entry_name
from ..rundir import PER_RUN_KINDS, unit_file, unit_id
from .external import builtin_methods, external_methods, file_sha256

RANDOM = "random"  # the random-init baseline, probed like a method

__all__ = ["RANDOM", "SECTIONS", "Unit", "plan_units", "study_methods"]

SECTIONS = {  # unit kind -> its config section
    "pretrain": lambda c: c.pretrain,
    "finetune": lambda c: c.finetune,
    "landscape": lambda c: c.analysis.landscape,
    "sharpness": lambda c: c.analysis.sharpness,
    "robustness": lambda c: c.analysis.robustness,
    "geometry": lambda c: c.analysis.geometry,
    "trajectory": lambda c: c.analysis.pretraining_trajectory,
    "representation": lambda c: c.analysis.representation,
    "alignment": lambda c: c.analysis.representation,
}


@dataclass(frozen=True)
class Unit:
    """One unit of work: a stage for one (method, seed, task), or a per-task aggregate."""

    kind: str  # "pretrain" | "finetune" | one of PER_RUN_KINDS | "geometry" | "trajectory" | "representation" | "alignment"
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
    """The names of the study's methods (built-in and external, families.entry_name) plus the random-init baseline when enabled."""
    return [entry_name(e) for e in config.methods] + ([RANDOM] if config.random_init_baseline else [])


def encoder_sources(config: StudyConfig) -> list[tuple[str, int, str | None]]:
    """Every encoder of the study in plan order: (method, seed, the external checkpoint or None when
    the study pretrains it, as the pretraining unit's ``rundir.ENCODER``)."""
    external = external_methods(config)
    return [(method, seed, external[method].checkpoint(i) if method in external else None)
            for method in study_methods(config) for i, seed in enumerate(config.seeds)]


def model_settings(config: StudyConfig) -> dict:
    """``config.model`` as unit keys hold it: without the stem when it is the default CIFAR one (older keys stay valid)."""
    model = to_dict(config.model)
    if model.get("stem") == "cifar":
        model.pop("stem")
    return model


def external_key(config: StudyConfig, method: str, checkpoint: str) -> dict:
    """What an external encoder's results depend on: the file's content (sha256; a module:function by its
    name) and how it is loaded."""
    ext = external_methods(config)[method]
    return {"checkpoint": file_sha256(checkpoint) or checkpoint, "mean": ext.mean, "std": ext.std, "stem_padding": ext.stem_padding}


def shared_pretrain_settings(config: StudyConfig) -> dict:
    """The pretrain settings every method's unit key holds: all but the learning rates (each key holds
    its own) and the methods' own sections and temperatures (only their own method's key holds them)."""
    shared = {k: v for k, v in to_dict(config.pretrain).items() if k != "lr" and k not in METHOD_SECTIONS}
    shared["temperature"] = {m: t for m, t in config.pretrain.temperature.items() if m not in METHOD_SECTIONS}
    return shared


def own_pretrain_settings(config: StudyConfig, method: str) -> dict:
    """{"method_settings": ...} for a method with a section of its own (pretrain.<method> and its
    temperature, if any), else {} (so the keys of simclr, supcon and supce stay as they were)."""
    if method not in METHOD_SECTIONS:
        return {}
    own = to_dict(getattr(config.pretrain, method))
    if method in config.pretrain.temperature:
        own["temperature"] = config.pretrain.temperature[method]
    return {"method_settings": own}


def plan_units(config: StudyConfig) -> list[Unit]:
    """Every unit of the study, each after the units it depends on."""
    data = to_dict(config.data)
    pretrain_data = {k: data[k] for k in ("pretrain", "image_size", "channels", "pretrain_per_class", "seed")}
    downstream_data = {k: data[k] for k in ("downstream", "image_size", "channels", "downstream_train_per_class", "downstream_test_per_class", "seed")}
    model = model_settings(config)
    # Where and how units compute changes their numbers (bf16, TF32, CUDA kernels): part of every key.
    execution = {"device": config.device, "precision": config.precision}
    units: list[Unit] = []
    finetune_keys: dict[int, list[str]] = {i: [] for i in range(len(config.data.tasks))}
    finetune_ids: dict[int, list[str]] = {i: [] for i in range(len(config.data.tasks))}
    for method, seed, external in encoder_sources(config):
        if external is not None:  # trained elsewhere: no pretraining unit, its probes read the file itself
            origin, encoder, after = {"external": external_key(config, method, external)}, ("encoder", external), ()
        else:
            pre = pretrain_unit(config, method, seed, pretrain_data, model, execution)
            units.append(pre)
            origin, encoder, after = {"pretrain": pre.key}, ("encoder", unit_file(pre.id, rundir.ENCODER)), (pre.id,)
        for t, classes in enumerate(config.data.tasks):
            fine_spec = {**origin, "data": downstream_data, "finetune": to_dict(config.finetune), "classes": classes, "execution": execution}
            fine = Unit("finetune", unit_id("finetune", method, seed, classes), config_hash(fine_spec), method, seed, t, after, (encoder,))
            units.append(fine)
            finetune_keys[t].append(fine.key)
            finetune_ids[t].append(fine.id)
            if method == RANDOM:
                continue
            for analysis in PER_RUN_KINDS:
                settings = getattr(config.analysis, analysis)
                if settings.enabled:
                    key = config_hash({"finetune": fine.key, analysis: to_dict(settings), "execution": execution})
                    units.append(Unit(analysis, unit_id(analysis, method, seed, classes), key, method, seed, t, (fine.id,),
                                      (encoder, ("probe", unit_file(fine.id, rundir.PROBE)))))
    if config.analysis.geometry.enabled:
        for t, classes in enumerate(config.data.tasks):
            key = config_hash({"finetune": finetune_keys[t], "geometry": to_dict(config.analysis.geometry), "execution": execution})
            units.append(Unit("geometry", unit_id("geometry", classes=classes), key, task=t, deps=tuple(finetune_ids[t]),
                              inputs=tuple(("snapshots", unit_file(i, rundir.SNAPSHOTS)) for i in finetune_ids[t])))
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
    encoders = len(study_methods(config))  # the random init and external methods included
    probed, built_in = len(config.methods), len(builtin_methods(config))  # every method but the random init; those it pretrains
    pretrained = encoders - (probed - built_in)  # external methods have no pretraining unit
    seeds, tasks = len(config.seeds), len(config.data.tasks)
    per_probe = sum(getattr(a, kind).enabled for kind in PER_RUN_KINDS)
    return (pretrained * seeds + encoders * seeds * tasks + probed * seeds * tasks * per_probe
            + built_in * seeds * tasks * a.pretraining_trajectory.enabled + tasks * a.geometry.enabled
            + (pretrained * seeds + tasks) * a.representation.enabled)


def pretrain_unit(config: StudyConfig, method: str, seed: int, pretrain_data: dict, model: dict, execution: dict) -> Unit:
    """The pretraining unit of a built-in method (or the random-init baseline) and seed."""
    if method == RANDOM:
        spec = {"data": pretrain_data, "model": model, "seed": seed, "method": method}
        if config.pretrain.normalization != "dataset":  # its encoder's statistics (absent by default: keys stay stable)
            spec["normalization"] = config.pretrain.normalization
    else:
        spec = {"data": pretrain_data, "model": model, "pretrain": shared_pretrain_settings(config), "lr": config.pretrain.lr[method],
                "method": method, "seed": seed, "execution": execution}
        spec.update(own_pretrain_settings(config, method))
    return Unit("pretrain", unit_id("pretrain", method, seed), config_hash(spec), method, seed)


def representation_units(config: StudyConfig, planned: list[Unit], pretrain_data: dict, downstream_data: dict,
                         execution: dict) -> list[Unit]:
    """Beyond the paper: probes along pretraining ("trajectory", per method, seed and task), CKA between
    every encoder of a task ("representation"), alignment / uniformity / rank per encoder ("alignment").
    ``planned``: the pretrain and finetune units planned so far. External methods (trained elsewhere) have
    no pretraining checkpoints to probe and no record of the data and augmentations they were trained
    with: no trajectory and no alignment units; CKA includes them."""
    from ..config_checks import trajectory_epochs

    a, p, units = config.analysis, config.pretrain, []
    pretrains = [u for u in planned if u.kind == "pretrain"]
    finetunes = {(u.method, u.seed, u.task): u for u in planned if u.kind == "finetune"}
    trajectory = a.pretraining_trajectory
    epochs = trajectory_epochs(config)
    for pre in pretrains:
        if trajectory.enabled and pre.method != RANDOM:
            checkpoints = tuple(("checkpoint", rundir.checkpoint_file(pre.id, e).as_posix()) for e in epochs)
            for t, classes in enumerate(config.data.tasks):
                # Linear probes the finetune units fitted already (final encoder; random init = epoch 0), which the
                # stage reads instead of refitting when their encoder is the checkpoint's: it runs after them.
                reusable = [u for u in (finetunes.get((pre.method, pre.seed, t)), finetunes.get((RANDOM, pre.seed, t)))
                            if u is not None and config.finetune.mode == "linear"]
                reuse = tuple(pair for u in reusable
                              for pair in (("finetune", unit_file(u.id, rundir.RESULT)), ("finetune_encoder", dict(u.inputs)["encoder"])))
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
                              inputs=(("encoder", unit_file(pre.id, rundir.ENCODER)),)))
    if a.representation.enabled:
        # every encoder of the study, external ones included (in encoder_sources' order, which the stage names them by)
        by_origin = {(u.method, u.seed): u for u in pretrains}
        sources = encoder_sources(config)
        encoders = tuple(("encoder", path if path is not None else unit_file(by_origin[(m, s)].id, rundir.ENCODER)) for m, s, path in sources)
        external = [external_key(config, m, path) for m, _, path in sources if path is not None]
        for t, classes in enumerate(config.data.tasks):
            spec = {"pretrain": [u.key for u in pretrains], "data": downstream_data, "classes": classes,
                    "analysis_split": config.finetune.analysis_split, "representation": to_dict(a.representation), "execution": execution}
            if external:  # absent without external methods: keys of such studies stay as they were
                spec["external"] = external
            units.append(Unit("representation", unit_id("representation", classes=classes), config_hash(spec), task=t,
                              deps=tuple(u.id for u in pretrains), inputs=encoders))
    return units


def single_unit(config: StudyConfig, kind: str, *, method: str | None = None, seed: int | None = None, task: int | None = None,
                inputs: dict[str, str] | None = None) -> Unit:
    """One unit run on its own (``contrastlab pretrain/finetune/analyze``) in its own output folder:
    its inputs are files given by the user, its key covers them and every setting of its stage."""
    inputs = inputs or {}
    spec = {"kind": kind, "method": method, "seed": seed, "settings": to_dict(SECTIONS[kind](config)), "data": to_dict(config.data),
            "model": model_settings(config), "inputs": {role: str(path) for role, path in inputs.items()},
            "execution": {"device": config.device, "precision": config.precision}}
    return Unit(kind, ".", config_hash(spec), method, seed, task, inputs=tuple(inputs.items()))
