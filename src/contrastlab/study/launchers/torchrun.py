"""The torchrun backend, and one unit on every process of a process group (torchrun, or a
multi-task Slurm job): pretraining data-parallel on all ranks, any other unit on rank 0 while
the other ranks wait for its ``done.json``."""

from __future__ import annotations

import time
from pathlib import Path

from ...config import StudyConfig
from ..plan import RANDOM, Unit
from ..units import is_done, prepare_unit_folder, run_unit
from .loop import UnitRunner
from .sequential import InProcess

DISTRIBUTED_POLL_S = 5.0  # how often ranks > 0 look for the done.json of a unit that rank 0 runs


def _wait_until_done(unit: Unit, run_dir: Path) -> None:
    # A file poll, not a barrier: an analysis on rank 0 can outlast any collective's timeout.
    while not is_done(unit, run_dir):
        time.sleep(DISTRIBUTED_POLL_S)


def run_unit_distributed(unit: Unit, config: StudyConfig, run_dir: Path, progress: bool = False,
                         runner: UnitRunner = run_unit) -> float:
    """Run ``unit`` in every process of an initialized process group; return seconds taken.

    Pretraining runs data-parallel on all ranks (rank 0 writes the folder); every other unit
    runs on rank 0 (through ``runner``) while the others wait for its ``done.json``. Outside a
    process group this is ``runner``.
    """
    import torch.distributed as torch_dist

    from ...distributed import is_distributed, rank
    from ..context import unit_context
    from ..stages import STAGES

    shown = {"progress": True} if progress else {}
    if not is_distributed():
        return runner(unit, config, run_dir, **shown)
    started = time.perf_counter()
    if unit.kind != "pretrain" or unit.method == RANDOM:
        if rank() == 0:
            return runner(unit, config, run_dir, **shown)
        _wait_until_done(unit, run_dir)
        return time.perf_counter() - started
    if rank() == 0:
        prepare_unit_folder(unit, run_dir)
    torch_dist.barrier()  # no rank looks for checkpoints before stale work is gone
    if rank() == 0:
        return runner(unit, config, run_dir, **shown)
    STAGES["pretrain"](unit_context(unit, config, run_dir, unit.folder(run_dir)))  # rank > 0 writes nothing
    return time.perf_counter() - started


def torchrun_backend(config: StudyConfig, run_dir: Path, runner: UnitRunner, progress: bool) -> InProcess:
    """Every rank runs each unit in turn (:func:`run_unit_distributed`); rank 0 draws the display."""
    from ...distributed import rank

    return InProcess(lambda unit: run_unit_distributed(unit, config, run_dir, progress=progress, runner=runner),
                     display=rank() == 0)


def all_ranks_through() -> None:
    """Return once every rank is through the study (a failing rank never gets here)."""
    import torch.distributed as torch_dist

    torch_dist.barrier()
