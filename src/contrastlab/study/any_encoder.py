"""Every analysis of the study on one encoder from anywhere (``contrastlab analyze all``).

The encoder is a contrastlab checkpoint, a solo-learn / lightly / torchvision ResNet-18
checkpoint, or ``package.module:function`` (:mod:`contrastlab.study.encoders`). For each task it
runs the study's own stages into the run directory's layout, without a method or seed level::

    DIR/finetune/<label>/task-<c>/         the linear probe (finetune settings)
    DIR/analysis/<kind>/<label>/task-<c>/  landscape, sharpness, robustness (those enabled)
    DIR/analysis/geometry/task-<c>/        progress t_w and InPCA of the one probe's trajectory

``<label>`` is a contrastlab checkpoint's method, else the encoder's source ("solo-learn", "lightly",
"torchvision", "module"): the name the report gives it. Each unit's manifest also says where the
encoder came from (``"encoder": {source, path, format, sha256}``). Finished units are skipped on a rerun.
``--mean/--std`` give the normalization the encoder was trained with; without them a contrastlab
checkpoint keeps its own and any other encoder gets each task's training split's statistics.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..config import StudyConfig, config_hash, to_dict
from .. import rundir
from ..rundir import PER_RUN_KINDS, RunLock, unit_file, unit_id
from .context import unit_context
from .plan import SECTIONS, Unit, model_settings
from .units import is_done, prepare_unit_folder, run_stage

log = logging.getLogger(__name__)


def encoder_label(spec: str) -> str:
    """How tables name the encoder: a contrastlab checkpoint's method, else its source ("solo-learn", "lightly", ...)."""
    from ..utils.io import read_json
    from .encoders import encoder_spec, is_contrastlab_checkpoint

    spec = encoder_spec(spec)
    if is_contrastlab_checkpoint(spec):
        return str(read_json(Path(spec).with_suffix(".json")).get("method") or "contrastlab")
    from ..models.foreign import load_foreign_encoder

    return str(load_foreign_encoder(spec)[1]["source"])  # reads the file once; errors are one line


def with_normalization(config: StudyConfig, spec: str, label: str, normalization: tuple[list[float], list[float]] | None) -> StudyConfig:
    """``config`` whose methods name the encoder as an external entry with the normalization it was trained
    with (what the stages read, study/external.py); ``config`` itself when none is given."""
    if normalization is None:
        return config
    mean, std = normalization
    return dataclasses.replace(config, methods=[{"name": label, "checkpoints": [spec], "mean": list(mean), "std": list(std)}])


def encoder_units(config: StudyConfig, spec: str, seed: int = 0, label: str | None = None) -> list[Unit]:
    """The units of ``spec`` on every task of ``config``, each after the units it reads; ``label``
    (default: :func:`encoder_label`) is their method, the encoder's name in every table. The keys hold
    the file's sha256 (a changed file is analyzed again) and any normalization given (:func:`with_normalization`)."""
    from .external import external_methods, file_sha256

    label = label or encoder_label(spec)
    execution = {"device": config.device, "precision": config.precision}
    base = {"encoder": spec, "data": to_dict(config.data), "model": model_settings(config), "seed": seed, "execution": execution,
            "sha256": file_sha256(spec)}
    given = external_methods(config).get(label)
    if given is not None:  # absent otherwise: keys of earlier runs stay valid
        base["normalization"] = {"mean": given.mean, "std": given.std}
    units: list[Unit] = []
    for t, classes in enumerate(config.data.tasks):
        fine = Unit("finetune", unit_id("finetune", label, classes=classes),
                    config_hash({**base, "kind": "finetune", "classes": classes, "settings": to_dict(config.finetune)}),
                    label, seed, t, inputs=(("encoder", spec),))
        units.append(fine)
        for kind in PER_RUN_KINDS:
            settings = SECTIONS[kind](config)
            if settings.enabled:
                key = config_hash({"finetune": fine.key, kind: to_dict(settings), "execution": execution})
                units.append(Unit(kind, unit_id(kind, label, classes=classes), key, label, seed, t, deps=(fine.id,),
                                  inputs=(("encoder", spec), ("probe", unit_file(fine.id, rundir.PROBE)))))
        if config.analysis.geometry.enabled:
            key = config_hash({"finetune": [fine.key], "geometry": to_dict(config.analysis.geometry), "execution": execution})
            units.append(Unit("geometry", unit_id("geometry", classes=classes), key, task=t, deps=(fine.id,),
                              inputs=(("snapshots", unit_file(fine.id, rundir.SNAPSHOTS)),)))
    return units


def analyze_encoder(config: StudyConfig, spec: str | Path, out: str | Path, *, seed: int = 0, progress: bool = False,
                    normalization: tuple[list[float], list[float]] | None = None) -> list[Unit]:
    """Run (or resume) every unit of :func:`encoder_units` into ``out``; return the units run.
    ``normalization``: (mean, std) the encoder was trained with (None: a contrastlab checkpoint's own,
    else each task's training split's statistics)."""
    out = Path(out)
    path = Path(spec).expanduser()
    spec = str(path.resolve()) if path.exists() else str(spec)  # a file by its absolute path; module:function as given
    label = encoder_label(spec)
    config = with_normalization(config, spec, label, normalization)
    ran = []
    with RunLock(out):
        for unit in encoder_units(config, spec, seed, label):
            if is_done(unit, out):
                continue
            folder = prepare_unit_folder(unit, out)
            run_stage(unit_context(unit, config, out, folder, progress))
            ran.append(unit)
            log.info("finished %s", unit.id)
    return ran
