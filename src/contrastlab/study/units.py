"""Running one unit of the study: prepare its folder, run its stage, write its manifest.

Each stage reads only files of the units it depends on and writes only into its own folder;
:func:`run_unit` writes the manifest ``done.json`` (:mod:`contrastlab.rundir`) last.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from pathlib import Path

from ..config import StudyConfig, to_dict
from ..distributed import rank
from ..errors import ContrastlabError, CorruptFileError
from ..rundir import (ERROR_LOG, MANIFEST, UNIT_MARKER, changed_outputs, check_lock_held, input_digests, read_manifest, stale_inputs,
                      task_name, write_manifest)
from ..utils.io import read_json_object, remove_orphaned_temporaries, write_json, write_text
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
    stale = stale_inputs(run_dir, manifest)
    if stale:
        log.warning("recomputing %s: its input %s was recomputed since it finished", unit.id, stale[0])
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
            (folder / ERROR_LOG).unlink(missing_ok=True)  # nor the traceback of an earlier failure
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
        # What its producers' manifests said of the files it read: a producer recomputed since makes it stale.
        "input_sha256": input_digests(ctx.run_dir, [p for paths in ctx.inputs.values() for p in paths]),
        **ctx.manifest,
    }


def run_stage(ctx: StageContext) -> float:
    """Run the stage of ``ctx`` and write the unit's manifest; return seconds taken."""
    started_wall, started = time.time(), time.perf_counter()
    STAGES[ctx.unit.kind](ctx)
    seconds = time.perf_counter() - started
    if rank() == 0:  # under torchrun every rank pretrains; rank 0 alone writes
        check_lock_held(ctx.run_dir)  # a worker of a study that has died finishes nothing
        write_manifest(ctx.folder, manifest_fields(ctx, started_wall, seconds))
    return seconds


# The setting that bounds a stage's memory: what an out-of-memory failure says to lower.
MEMORY_SETTINGS = {
    "pretrain": "pretrain.batch_size", "finetune": "finetune.batch_size", "trajectory": "finetune.batch_size",
    "landscape": "analysis.landscape.batch_size", "sharpness": "analysis.sharpness.batch_size",
    "robustness": "analysis.robustness.batch_size", "representation": "analysis.representation.samples",
    "alignment": "analysis.representation.pairs", "geometry": "finetune.epochs",
}
_OOM_MARKS = ("DefaultCPUAllocator", "out of memory", "Cannot allocate memory")


class UnitError(ContrastlabError):
    """A unit failed: one line (its cause, where its traceback is); the traceback is in its error.log."""


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OOM_MARKS))


def failure_line(unit: Unit, exc: BaseException, log_path: Path | None) -> str:
    """One line for a unit that raised ``exc``: the cause (out of memory named as such, with the
    setting to lower) and where its traceback is."""
    text = str(exc).strip().splitlines()
    cause = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    if isinstance(exc, ContrastlabError):
        cause = text[0] if text else cause
    if is_out_of_memory(exc):
        setting = MEMORY_SETTINGS.get(unit.kind, "model.width")
        cause = f"out of memory ({cause[:160]}); lower {setting} (--set {setting}=...) or run fewer units at once (--jobs)"
    return cause + (f"; traceback in {log_path}" if log_path is not None else "")


def run_unit(unit: Unit, config: StudyConfig, run_dir: Path, progress: bool = False) -> float:
    """Run ``unit`` (resuming its own partial work), write its manifest; return seconds taken.
    A failure writes its traceback to the unit's ``error.log`` and raises :class:`UnitError`, one line."""
    folder = unit.folder(run_dir)
    try:
        folder = prepare_unit_folder(unit, run_dir)
        return run_stage(unit_context(unit, config, run_dir, folder, progress))
    except Exception as exc:
        log_path: Path | None = folder / ERROR_LOG
        try:
            write_text(log_path, "".join(traceback.format_exception(exc)))
        except (OSError, ContrastlabError):  # disk full, read-only: the line must still come out
            log_path = None
        raise UnitError(failure_line(unit, exc, log_path)) from None
