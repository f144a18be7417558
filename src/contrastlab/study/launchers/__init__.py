"""Run the study's units: one ready-unit loop over four backends.

The study is a list of units with dependencies (:mod:`.plan`); every unit reads only the
folders of the units it depends on and writes only its own folder of the shared run
directory, finishing with ``done.json``. So a unit can run in any process or on any node
that sees the run directory, and the result is the same files whichever backend ran it.

:func:`run_units` is the one loop: it starts each unit, in plan order, once its dependencies
are done (a backend that holds jobs back itself, Slurm, gets it as soon as its dependencies
are *submitted*), as many at once as the backend takes. A failing unit stops new starts;
the running ones finish, then :class:`UnitFailedError` names the unit. Finished units keep
their ``done.json``, so running the same command again resumes the study. The backends:

- ``sequential``: one unit at a time in this process, with the study's progress display.
- ``local``: a pool of ``launcher.jobs`` worker processes (forked from a server that has
  imported the stages, on Linux; spawned elsewhere); each worker gets ``cpus // jobs`` torch
  threads and, on a machine with GPUs, its own GPU (round-robin).
- ``slurm``: one submitit job per unit. A Slurm executor gets every unit at once, in plan
  order, a dependent job waiting in the queue (``--dependency=afterok:<job ids>``) until its
  dependencies' jobs ended well. Pretraining jobs with ``launcher.gpus_per_job > 1`` run one
  process per GPU (data-parallel, :func:`run_unit_distributed`); every other job takes one
  GPU. Executors that cannot hold jobs back (submitit's ``LocalExecutor``, ``DebugExecutor``)
  get each unit only once its dependencies are done, ``launcher.jobs`` at a time.
- ``torchrun``: inside an initialized process group every rank runs the same units in plan
  order, one at a time (:func:`run_unit_distributed`): pretraining data-parallel on all ranks,
  every other unit on rank 0 while the other ranks wait for its ``done.json``.

The modules: :mod:`.loop` (the ready-unit loop, its tracker, the backend interface),
:mod:`.sequential`, :mod:`.local`, :mod:`.slurm` and :mod:`.torchrun` (one backend each).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...config import StudyConfig
from ...errors import ContrastlabError
from ..plan import Unit
from ..units import run_unit
from .local import LocalPool
from .loop import Backend, UnitRunner, run_ready_units
from .sequential import sequential_backend
from .slurm import Submitit, slurm_executor
from .torchrun import all_ranks_through, torchrun_backend

__all__ = ["run_units"]  # everything else is imported from the module that defines it

KINDS = ("sequential", "local", "slurm")


def run_units(todo: list[Unit], config: StudyConfig, run_dir: str | Path, *, progress: bool = False,
              executor: Any = None, runner: UnitRunner = run_unit) -> list[str]:
    """Run ``todo`` (units in plan order; a dependency outside it is already done); return the
    ids of the units run, in the order they finished.

    The backend is ``torchrun`` inside an initialized process group, else ``config.launcher.kind``.
    ``executor``: a submitit executor for ``slurm`` (default: a Slurm ``AutoExecutor`` writing
    its logs to ``RUN_DIR/slurm``). ``runner``: what runs one unit (sequential, local workers,
    rank 0 under torchrun); Slurm jobs always run :func:`run_unit_job`.
    """
    from ...distributed import is_distributed

    run_dir = Path(run_dir)
    kind = "torchrun" if is_distributed() else config.launcher.kind
    if kind not in KINDS + ("torchrun",):
        raise ContrastlabError(f"unknown launcher '{kind}'; valid: {', '.join(KINDS)}")
    if not todo:
        return []
    backend: Backend
    if kind == "sequential":
        backend = sequential_backend(config, run_dir, runner, progress)
    elif kind == "torchrun":
        backend = torchrun_backend(config, run_dir, runner, progress)
    elif kind == "local":
        backend = LocalPool(config, run_dir, runner)
    else:
        backend = Submitit(executor if executor is not None else slurm_executor(run_dir), config, run_dir)
    with backend:
        ran = run_ready_units(todo, backend, progress=progress)
    if kind == "torchrun":
        all_ranks_through()
    return ran
