"""The study as a list of units of work with dependencies.

Every unit owns one folder of the run directory (its ``id``) and is finished exactly when
that folder's ``done.json`` exists and carries the unit's ``key``: a hash of every setting
the unit's result depends on, its upstream units' keys included. Only this module knows
the order of the stages.

Run directory::

    DIR/config.yaml, DIR/study.json                       resolved config and its hash
    DIR/pretrain/<method>/seed<k>/                        encoder + checkpoints + metrics.csv
    DIR/finetune/<method>/seed<k>/task-<classes>/         probe, snapshots, history, result.json
    DIR/analysis/landscape/<method>/seed<k>/task-<c>/     loss.npy, accuracy.npy
    DIR/analysis/sharpness/<method>/seed<k>/task-<c>/     sharpness.json
    DIR/analysis/robustness/<method>/seed<k>/task-<c>/    <attack>.csv
    DIR/analysis/geometry/task-<c>/                       progress.csv, inpca.npy
    DIR/report/                                           report.html, figures/*.png, tables/*.csv
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import StudyConfig, config_hash, to_dict

RANDOM = "random"  # the random-init baseline, probed like a method
ANALYSES = ("landscape", "sharpness", "robustness")


def task_name(classes: list[int]) -> str:
    return "task-" + "-".join(str(c) for c in classes)


@dataclass(frozen=True)
class Unit:
    """One unit of work: a stage for one (method, seed, task), or a per-task aggregate."""

    kind: str  # "pretrain" | "finetune" | one of ANALYSES | "geometry"
    id: str  # its folder, relative to the run directory
    key: str  # hash of everything its result depends on
    method: str | None = None
    seed: int | None = None
    task: int | None = None  # index into config.data.tasks
    deps: tuple[str, ...] = field(default=())

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
    units: list[Unit] = []
    finetune_keys: dict[int, list[str]] = {i: [] for i in range(len(config.data.tasks))}
    finetune_ids: dict[int, list[str]] = {i: [] for i in range(len(config.data.tasks))}
    for method in study_methods(config):
        for seed in config.seeds:
            if method == RANDOM:
                spec = {"data": pretrain_data, "model": model, "seed": seed, "method": method}
            else:
                spec = {"data": pretrain_data, "model": model, "pretrain": pretrain, "lr": config.pretrain.lr[method], "method": method, "seed": seed}
            pre = Unit("pretrain", f"pretrain/{method}/seed{seed}", config_hash(spec), method, seed)
            units.append(pre)
            for t, classes in enumerate(config.data.tasks):
                fine_spec = {"pretrain": pre.key, "data": downstream_data, "finetune": to_dict(config.finetune), "classes": classes}
                fine = Unit("finetune", f"finetune/{method}/seed{seed}/{task_name(classes)}", config_hash(fine_spec), method, seed, t, (pre.id,))
                units.append(fine)
                finetune_keys[t].append(fine.key)
                finetune_ids[t].append(fine.id)
                if method == RANDOM:
                    continue
                for analysis in ANALYSES:
                    settings = getattr(config.analysis, analysis)
                    if settings.enabled:
                        key = config_hash({"finetune": fine.key, analysis: to_dict(settings)})
                        units.append(Unit(analysis, f"analysis/{analysis}/{method}/seed{seed}/{task_name(classes)}", key, method, seed, t, (fine.id,)))
    if config.analysis.geometry.enabled:
        for t, classes in enumerate(config.data.tasks):
            key = config_hash({"finetune": finetune_keys[t], "geometry": to_dict(config.analysis.geometry)})
            units.append(Unit("geometry", f"analysis/geometry/{task_name(classes)}", key, task=t, deps=tuple(finetune_ids[t])))
    return units
