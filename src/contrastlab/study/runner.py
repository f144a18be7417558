"""Run a whole study: check the run directory, run the units that are not done, build the report."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import StudyConfig, config_hash, to_dict, to_yaml
from ..distributed import is_distributed, rank
from ..errors import RunDirectoryError
from ..utils.io import read_json, write_json, write_text
from ..utils.progress import live_display
from ..utils.provenance import provenance, resolve_device
from .plan import Unit, plan_units
from .units import is_done, run_unit

log = logging.getLogger(__name__)


@dataclass
class StudySummary:
    run_dir: Path
    report: Path | None
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def study_hash(config: StudyConfig) -> str:
    """Hash of everything that decides the results: not how or where the units run."""
    return config_hash({k: v for k, v in to_dict(config).items() if k not in ("launcher", "device")})


def prepare_run_dir(config: StudyConfig, run_dir: Path, force: bool = False) -> None:
    """Write the resolved config at the top of ``run_dir``; refuse a directory of another config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    digest = study_hash(config)
    study_file = run_dir / "study.json"
    if study_file.exists():
        previous = read_json(study_file).get("config_hash")
        if previous != digest and not force:
            raise RunDirectoryError(
                f"{run_dir} holds a study with another config (hash {previous}, this one {digest}); "
                "use a new --out, or --force to reuse what still matches and recompute the rest"
            )
    elif any(run_dir.iterdir()):
        if not force:
            raise RunDirectoryError(f"{run_dir} is not empty and holds no study; use a new --out, or --force to run into it anyway")
    write_text(run_dir / "config.yaml", to_yaml(config))
    write_json(study_file, {"config_hash": digest, "name": config.name, "config": to_dict(config),
                            "provenance": provenance(str(resolve_device(config.device)))})


def pending_units(config: StudyConfig, run_dir: Path) -> tuple[list[Unit], list[Unit]]:
    """(units still to run, units already done) in plan order."""
    units = plan_units(config)
    done = [u for u in units if is_done(u, run_dir)]
    done_ids = {u.id for u in done}
    return [u for u in units if u.id not in done_ids], done


def run_study(config: StudyConfig, run_dir: str | Path, *, force: bool = False, progress: bool = False,
              build_report: bool = True) -> StudySummary:
    """Run every unit of the study that is not done yet, then write the report."""
    run_dir = Path(run_dir)
    if is_distributed():  # under torchrun: every rank runs the same plan, see _run_distributed
        return _run_distributed(config, run_dir, force=force, build_report=build_report)
    prepare_run_dir(config, run_dir, force)
    todo, done = pending_units(config, run_dir)
    summary = StudySummary(run_dir=run_dir, report=None, skipped=[u.id for u in done])
    started = time.perf_counter()
    log.info("%d units to run, %d already done", len(todo), len(done))
    if config.launcher.kind == "sequential":
        _run_sequential(todo, config, run_dir, progress, summary)
    else:
        from .launchers import run_parallel

        summary.ran.extend(run_parallel(todo, config, run_dir, progress=progress))
    if build_report:
        from ..report.build import build_report as make_report

        summary.report = make_report(run_dir)
    summary.seconds = time.perf_counter() - started
    return summary


def _run_sequential(todo: list[Unit], config: StudyConfig, run_dir: Path, progress: bool, summary: StudySummary) -> None:
    if not progress:
        for unit in todo:
            run_unit(unit, config, run_dir)
            summary.ran.append(unit.id)
        return
    with live_display() as display:
        overall = display.add_task("study", total=len(todo))
        for unit in todo:
            display.update(overall, description=f"study: {unit.id}")
            run_unit(unit, config, run_dir, progress=True)
            summary.ran.append(unit.id)
            display.advance(overall)
        display.update(overall, description="study: done")


def _run_distributed(config: StudyConfig, run_dir: Path, *, force: bool, build_report: bool) -> StudySummary:
    """The study under ``torchrun``: pretraining runs data-parallel on all ranks, every other unit
    on rank 0 while the others wait; rank 0 alone writes the top files and the report."""
    import torch.distributed as torch_dist

    from .launchers import run_unit_distributed

    started = time.perf_counter()
    if rank() == 0:
        prepare_run_dir(config, run_dir, force)
    torch_dist.barrier()
    todo, done = pending_units(config, run_dir)
    summary = StudySummary(run_dir=run_dir, report=None, skipped=[u.id for u in done])
    for unit in todo:
        run_unit_distributed(unit, config, run_dir)
        summary.ran.append(unit.id)
    torch_dist.barrier()
    if build_report and rank() == 0:
        from ..report.build import build_report as make_report

        summary.report = make_report(run_dir)
    summary.seconds = time.perf_counter() - started
    return summary
