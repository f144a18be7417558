"""Run a whole study: check and lock the run directory, run the units that are not done, build the report."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import StudyConfig, config_hash, to_dict, to_yaml
from ..distributed import barrier, is_distributed, rank
from ..errors import CorruptFileError, Interrupted, RunDirectoryError, Terminated
from ..rundir import CONFIG_FILE, LOCK_FILE, MANIFEST, STUDY_NAMES, UNIT_MARKER, RunLock, end_run, read_study, start_run
from ..utils.io import write_text
from ..utils.provenance import provenance
from .context import resolve_device
from .plan import Unit, plan_units
from .units import is_done

log = logging.getLogger(__name__)


@dataclass
class StudySummary:
    run_dir: Path
    report: Path | None
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def study_hash(config: StudyConfig) -> str:
    """Hash of everything that decides the results (device and precision included), not of how units are launched."""
    return config_hash({k: v for k, v in to_dict(config).items() if k != "launcher"})


def check_run_dir(config: StudyConfig, run_dir: Path, force: bool = False) -> None:
    """Refuse a directory of another config, or a non-empty one that holds no study; writes nothing."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir} is a file, not a directory; choose another --out")
    digest = study_hash(config)
    try:
        study = read_study(run_dir)
    except CorruptFileError:
        if not force:
            raise
        log.warning("rewriting the corrupt %s/study.json (--force)", run_dir)
        return
    if study is not None:
        if study.get("config_hash") != digest and not force:
            raise RunDirectoryError(
                f"{run_dir} holds a study with another config (hash {study.get('config_hash')}, this one {digest}); "
                "use a new --out, or --force to reuse what still matches and recompute the rest")
    elif any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        if not force:
            raise RunDirectoryError(f"{run_dir} is not empty and holds no study; use a new --out, or --force to run into it anyway")
        foreign = foreign_paths(run_dir)
        if foreign:
            raise RunDirectoryError(f"{foreign[0]} was not written by a contrastlab study and --force would overwrite it; "
                                    "move it away or use a new --out")


def foreign_paths(run_dir: Path) -> list[Path]:
    """Paths of ``run_dir`` (which holds no study.json) that a study would write but did not: its
    config.yaml (a study writes it only with its study.json), or a folder of its layout holding no
    unit (no done.json or unit.json anywhere under it)."""
    found = []
    for name in STUDY_NAMES:
        path = run_dir / name
        if not path.exists():
            continue
        if path.is_file() or name == CONFIG_FILE or not any(path.rglob(MANIFEST)) and not any(path.rglob(UNIT_MARKER)):
            found.append(path)
    return found


def prepare_run_dir(config: StudyConfig, run_dir: Path, force: bool = False) -> int:
    """Check ``run_dir``, write the resolved config at its top and open a run in its history; return the run's index."""
    check_run_dir(config, run_dir, force)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / CONFIG_FILE, to_yaml(config))
    return start_run(run_dir, study_hash(config), config.name, to_dict(config), provenance(str(resolve_device(config.device))))


def pending_units(config: StudyConfig, run_dir: Path) -> tuple[list[Unit], list[Unit]]:
    """(units still to run, units already done) in plan order. A unit whose dependency runs again
    runs again too (after it: no unit reads a file while it is rewritten), transitively."""
    todo: list[Unit] = []
    done: list[Unit] = []
    rerun: set[str] = set()
    for unit in plan_units(config):  # dependencies come first
        upstream = [d for d in unit.deps if d in rerun]
        if upstream and (run_dir / unit.id / MANIFEST).exists():  # a finished unit, not a new one
            log.info("recomputing %s: its dependency %s runs again", unit.id, upstream[0])
        if upstream or not is_done(unit, run_dir):
            todo.append(unit)
            rerun.add(unit.id)
        else:
            done.append(unit)
    return todo, done


def run_study(config: StudyConfig, run_dir: str | Path, *, force: bool = False, progress: bool = False,
              build_report: bool = True) -> StudySummary:
    """Run every unit of the study that is not done yet, then write the report.

    One process writes a run directory at a time (its lock); the run is recorded in study.json's
    history with its end and status, whatever the end: finished (every unit and the report),
    interrupted (Ctrl-C), terminated (SIGTERM), failed (any stage, the report included)."""
    from .launchers import run_units

    run_dir = Path(run_dir)
    started = time.perf_counter()
    main_process = not is_distributed() or rank() == 0
    if main_process:
        check_run_dir(config, run_dir, force)  # before the lock creates the directory
    lock = RunLock(run_dir)
    if main_process:
        lock.acquire()
    summary = StudySummary(run_dir=run_dir, report=None)
    status, index, todo = "failed", -1, []
    try:
        index = prepare_run_dir(config, run_dir, force) if main_process else -1
        barrier()
        todo, done = pending_units(config, run_dir)
        summary.skipped = [u.id for u in done]
        log.info("%d units to run, %d already done", len(todo), len(done))
        summary.ran = run_units(todo, config, run_dir, progress=progress)
        if build_report and main_process:
            from ..report.build import build_report as make_report

            # The local launcher's jobs say how many processes this machine is meant to run at once; the
            # other launchers build the report where the study was started: there, in this process.
            workers = config.launcher.jobs if config.launcher.kind == "local" else 1
            summary.report = make_report(run_dir, workers=workers, verify=False)  # pending_units checked them
        status = "finished"  # every stage, the report included
    except Terminated:
        status = "terminated"
        raise
    except (KeyboardInterrupt, Interrupted):
        status = "interrupted"
        raise
    finally:
        try:
            if main_process and index >= 0:  # a cut run returns no list: count what it finished from the manifests
                units_run = len(summary.ran) if summary.ran else sum(is_done(u, run_dir) for u in todo)
                end_run(run_dir, index, status, units_run)
        finally:
            lock.release()
    summary.seconds = time.perf_counter() - started
    return summary
