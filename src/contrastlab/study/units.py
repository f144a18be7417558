"""Running one unit of the study: prepare its folder, run its stage, write its manifest.

Each stage reads only files of the units it depends on and writes only into its own folder;
:func:`run_unit` writes the manifest ``done.json`` (:mod:`contrastlab.rundir`) last.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from ..config import StudyConfig, to_dict
from ..distributed import rank
from ..errors import CorruptFileError
from ..rundir import MANIFEST, UNIT_MARKER, changed_outputs, read_manifest, task_name, write_manifest
from ..utils.io import read_json_object, remove_orphaned_temporaries, write_json
from ..utils.provenance import provenance
from .context import StageContext, unit_context
from .plan import Unit
from .stages import STAGES

log = logging.getLogger(__name__)


def is_done(unit: Unit, run_dir: Path) -> bool:
    """True when the unit's manifest carries its key and every file it lists is unchanged.
    A corrupt manifest, or missing or changed outputs, mean: recompute (with a warning)."""
    folder = unit.folder(run_dir)
    try:
        manifest = read_manifest(folder)
    except CorruptFileError as exc:
        log.warning("%s; recomputing %s", exc, unit.id)
        return False
    if manifest is None or manifest.get("key") != unit.key:
        return False
    problems = changed_outputs(folder, manifest)
    if problems:
        log.warning("recomputing %s: %s since it finished", unit.id, ", ".join(problems))
        return False
    return True


def prepare_unit_folder(unit: Unit, run_dir: Path) -> Path:
    """Create the unit's folder and mark it as this unit's (``unit.json``). Partial work of another
    configuration (reachable only with --force) is removed first: it must not be resumed. Of this
    unit's own partial work, only the temporaries of writes cut short by a kill are removed (the
    run directory's lock guarantees no other process is writing them)."""
    folder = unit.folder(run_dir)
    marker = folder / UNIT_MARKER
    if folder.exists():
        try:
            ours = marker.exists() and read_json_object(marker, "unit marker").get("key") == unit.key
        except CorruptFileError:
            ours = False
        if ours:
            remove_orphaned_temporaries(folder)
            (folder / MANIFEST).unlink(missing_ok=True)  # a stale or broken manifest must not outlive a rerun
        else:
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"unit": unit.id, "key": unit.key})
    return folder


def manifest_fields(ctx: StageContext, started: float, seconds: float) -> dict:
    """What the manifest says of a unit besides its files."""
    unit = ctx.unit
    classes = ctx.config.data.tasks[unit.task] if unit.task is not None else None
    return {
        "unit": unit.id, "kind": unit.kind, "key": unit.key, "method": unit.method, "seed": unit.seed,
        "task": task_name(classes) if classes is not None else None, "task_classes": classes,
        **ctx.execution(), "versions": provenance(), "study": ctx.config.name,
        "settings": to_dict(ctx.settings), "seconds": seconds, "started": started, "finished": time.time(),
        "inputs": {role: [str(p) for p in paths] for role, paths in ctx.inputs.items()},
        **ctx.manifest,
    }


def run_stage(ctx: StageContext) -> float:
    """Run the stage of ``ctx`` and write the unit's manifest; return seconds taken."""
    started_wall, started = time.time(), time.perf_counter()
    STAGES[ctx.unit.kind](ctx)
    seconds = time.perf_counter() - started
    if rank() == 0:  # under torchrun every rank pretrains; rank 0 alone writes
        write_manifest(ctx.folder, manifest_fields(ctx, started_wall, seconds))
    return seconds


def run_unit(unit: Unit, config: StudyConfig, run_dir: Path, progress: bool = False) -> float:
    """Run ``unit`` (resuming its own partial work), write its manifest; return seconds taken."""
    folder = prepare_unit_folder(unit, run_dir)
    return run_stage(unit_context(unit, config, run_dir, folder, progress))
