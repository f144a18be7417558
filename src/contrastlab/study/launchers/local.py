"""The local backend: a pool of ``launcher.jobs`` worker processes on this machine (forked from a
server that has imported the stages, :mod:`contrastlab.utils.workers`), the CPU cores shared out
evenly among them and, with GPUs, one GPU each (round-robin)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from ...config import StudyConfig
from ...errors import ContrastlabError
from ...rundir import LOCK_OWNER_ENV
from ...utils.workers import adopt_environment, worker_context
from ..plan import Unit
from .loop import Backend, Outcome, UnitRunner, exception_failure

log = logging.getLogger(__package__)


def available_cpus() -> int:
    """CPU cores this process may use (its affinity mask, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of ``jobs`` concurrent workers: the cores shared out evenly."""
    return max(1, available_cpus() // max(1, jobs))


def gpu_slots(jobs: int, device: str) -> list[str] | None:
    """The GPU each of ``jobs`` workers gets (``CUDA_VISIBLE_DEVICES`` values, round-robin over
    the visible GPUs), or None when the study does not run on CUDA or there is no GPU."""
    if device not in ("auto", "cuda"):  # "cpu", or one explicitly chosen device: leave it alone
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
    else:
        import torch

        ids = [str(i) for i in range(torch.cuda.device_count())]
    if not ids:
        return None
    return [ids[i % len(ids)] for i in range(jobs)]


_PR_SET_PDEATHSIG = 1  # prctl(2)
POLL_SECONDS = 0.5  # how often a worker checks that the study's process is alive


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent (the fork server, or the study for a
    spawned worker) ends. Elsewhere, or without libc, a no-op: :func:`_watch_study` covers it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _watch_study(study_pid: int) -> None:
    """A daemon thread that ends this worker as soon as the study's process is gone (killed with
    SIGKILL, which no handler sees): no unit runs on, or holds memory, for a study that has died.
    Its partial work stays resumable (every write is atomic)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(POLL_SECONDS)
            try:
                os.kill(study_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            if os.getppid() != parent:  # orphaned: its fork server is gone too
                os._exit(1)

    threading.Thread(target=watch, name="watch-study", daemon=True).start()


def _init_worker(threads: int, gpus: Any, log_level: int, environ: dict[str, str], study_pid: int) -> None:
    """Runs first in every worker: die with the study, the study's environment, a GPU pinned before
    CUDA starts, the CPU threads shared out."""
    _die_with_parent()
    _watch_study(study_pid)
    adopt_environment(environ)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s [%(processName)s]: %(message)s")


class LocalPool(Backend):
    """``launcher.jobs`` worker processes, each with its threads and GPU."""

    def __init__(self, config: StudyConfig, run_dir: Path, runner: UnitRunner):
        self.config, self.run_dir, self.runner = config, run_dir, runner
        self.limit = config.launcher.jobs
        if self.limit < 1:
            raise ContrastlabError(f"launcher.jobs must be at least 1, got {self.limit}")
        self.running: dict[Future, Unit] = {}
        self.order: dict[str, int] = {}

    def __enter__(self) -> "LocalPool":
        context = worker_context()  # not plain fork: it would copy torch's thread pools and any CUDA state
        slots = gpu_slots(self.limit, self.config.device)
        gpus = None
        if slots is not None:
            gpus = context.Queue()
            for slot in slots:
                gpus.put(slot)
        threads = threads_per_job(self.limit)
        log.info("local launcher: %d workers, %d threads each%s", self.limit, threads,
                 f", GPUs {','.join(slots)}" if slots else "")
        self.pool = ProcessPoolExecutor(max_workers=self.limit, mp_context=context, initializer=_init_worker,
                                        initargs=(threads, gpus, logging.getLogger().getEffectiveLevel(),
                                                  {**os.environ, LOCK_OWNER_ENV: str(os.getpid())}, os.getpid()))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.pool.shutdown(wait=True)

    def in_flight(self) -> int:
        return len(self.running)

    def start(self, unit: Unit, after: list[str]) -> None:
        self.order.setdefault(unit.id, len(self.order))
        self.running[self.pool.submit(self.runner, unit, self.config, self.run_dir)] = unit

    def wait(self) -> list[Outcome]:
        finished, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
        outcomes: list[Outcome] = []
        for future in finished:
            unit = self.running.pop(future)
            error = future.exception()
            if error is None:
                outcomes.append((unit, future.result(), None))
            elif isinstance(error, BrokenProcessPool):
                outcomes.append((unit, None, ("its worker process died (killed, or out of memory?)", error, "")))
            else:  # the worker's traceback travels as the exception's cause
                outcomes.append((unit, None, exception_failure(error)))
        return sorted(outcomes, key=lambda o: self.order[o[0].id])

    def stop(self) -> None:
        # Stop the workers now rather than let the pool wait for units that may run for hours.
        # Their partial work stays resumable.
        log.info("stopping %d running units; finished units are kept, run again to resume", len(self.running))  # the CLI says it in one line
        for process in list((getattr(self.pool, "_processes", None) or {}).values()):
            process.terminate()
        self.pool.shutdown(wait=False, cancel_futures=True)
