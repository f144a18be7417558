"""Run the study's units in parallel: worker processes on this machine, or Slurm jobs.

The study is a list of units with dependencies (:mod:`.plan`); every unit reads only the
folders of the units it depends on and writes only its own folder of the shared run
directory, finishing with ``done.json``. So a unit can run in any process or on any node
that sees the run directory, and the result is the same files a sequential run writes.

- ``local``: a dependency-aware scheduler over a pool of ``launcher.jobs`` worker processes
  (``spawn``). A unit is started as soon as all its dependencies are done; each worker gets
  ``cpus // jobs`` torch threads and, on a machine with GPUs, its own GPU (round-robin).
- ``slurm``: one submitit job per unit, all submitted at once in plan order; a dependent job
  waits in the Slurm queue (``--dependency=afterok:<job ids>``) until its dependencies' jobs
  ended well. Pretraining jobs with ``launcher.gpus_per_job > 1`` run one process per GPU
  (data-parallel, :func:`run_unit_distributed`); every other job takes one GPU. Executors that
  cannot hold jobs back (submitit's ``LocalExecutor``, ``DebugExecutor``) get each unit only
  once its dependencies are done, ``launcher.jobs`` at a time.

A failing unit stops new units from being started (Slurm: its dependents are dropped by
Slurm); running ones finish, then :class:`UnitFailedError` names the unit. Finished units keep
their ``done.json``, so running the same command again resumes the study.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config import LauncherConfig, StudyConfig
from ..errors import ContrastlabError
from ..utils.progress import live_display
from .plan import RANDOM, Unit
from .units import is_done, prepare_unit_folder, run_unit

log = logging.getLogger(__name__)

UnitRunner = Callable[[Unit, StudyConfig, Path], float]
SLURM_POLL_S = 30.0  # sacct is queried at most this often
LOCAL_POLL_S = 0.5


class UnitFailedError(ContrastlabError):
    """A unit of the study failed under a parallel launcher; finished units are kept."""

    def __init__(self, unit_id: str, message: str):
        super().__init__(message)
        self.unit_id = unit_id

    def __reduce__(self):  # picklable despite the extra constructor argument
        return (type(self), (self.unit_id, str(self)))


def run_parallel(todo: list[Unit], config: StudyConfig, run_dir: str | Path, *, progress: bool = False,
                 executor: Any = None, runner: UnitRunner = run_unit) -> list[str]:
    """Run ``todo`` (units in plan order; a dependency outside it is already done) with the
    launcher of ``config.launcher.kind``; return the ids of the units run, in finishing order.

    ``executor``: a submitit executor for ``slurm`` (default: a Slurm ``AutoExecutor`` writing
    its logs to ``RUN_DIR/slurm``). ``runner``: what runs one unit in a ``local`` worker (a
    top-level function, so that it pickles).
    """
    run_dir = Path(run_dir)
    kind = config.launcher.kind
    if kind == "local":
        return run_local(todo, config, run_dir, progress=progress, runner=runner)
    if kind == "slurm":
        return run_slurm(todo, config, run_dir, executor=executor, progress=progress)
    raise ContrastlabError(f"run_parallel has no launcher '{kind}'; valid: local, slurm")


# ---- dependencies and bookkeeping ---------------------------------------------------------

def pending_dependencies(todo: Sequence[Unit]) -> dict[str, list[str]]:
    """Unit id -> ids of its dependencies that are in ``todo`` (the others are done), in plan order."""
    ids = {u.id for u in todo}
    graph = {u.id: [d for d in u.deps if d in ids] for u in todo}
    position = {u.id: i for i, u in enumerate(todo)}
    for uid, deps in graph.items():
        late = [d for d in deps if position[d] >= position[uid]]
        if late:  # plan_units lists every unit after its dependencies; Slurm submission relies on it
            raise ContrastlabError(f"unit {uid} is listed before its dependency {late[0]}")
    return graph


def slurm_jobs(todo: Sequence[Unit]) -> list[tuple[Unit, list[str]]]:
    """The jobs to submit, in submission order: each unit with the ids of the units whose jobs
    it must wait for (its dependencies in ``todo``)."""
    graph = pending_dependencies(todo)
    return [(unit, graph[unit.id]) for unit in todo]


class _Tracker:
    """The parent's view of a parallel run: which units finished or failed, logging, progress."""

    def __init__(self, todo: Sequence[Unit], display: Any = None):
        self.todo = list(todo)
        self.finished: list[str] = []
        self.failure: tuple[str, str, BaseException | None] | None = None  # (unit id, message, cause)
        self.display = display
        self.task = display.add_task("study", total=len(todo)) if display is not None else None
        self.running: list[str] = []

    def started(self, unit: Unit) -> None:
        self.running.append(unit.id)
        log.info("started %s", unit.id)
        self._describe()

    def queued(self, units: Sequence[Unit]) -> None:
        """Units handed to Slurm all at once: in the queue or running, Slurm decides."""
        self.running.extend(u.id for u in units)
        if self.display is not None:
            self.display.update(self.task, description=f"study: {len(self.running)} Slurm jobs")

    def succeeded(self, unit: Unit, seconds: float | None) -> None:
        self.running.remove(unit.id)
        self.finished.append(unit.id)
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        log.info("[%d/%d] finished %s%s", len(self.finished), len(self.todo), unit.id, took)
        if self.display is not None:
            self.display.advance(self.task)
        self._describe()

    def failed(self, unit: Unit, message: str, cause: BaseException | None = None, details: str = "") -> None:
        if unit.id in self.running:
            self.running.remove(unit.id)
        # The CLI prints the final error as one line; the cause's traceback is logged here.
        log.error("unit %s failed: %s%s", unit.id, message, f"\n{details.rstrip()}" if details else "")
        if self.failure is None:
            self.failure = (unit.id, message, cause)
        self._describe()

    def _describe(self) -> None:
        if self.display is None:
            return
        shown = ", ".join(self.running[:2]) + (f" +{len(self.running) - 2}" if len(self.running) > 2 else "")
        self.display.update(self.task, description=f"study: {shown or 'waiting'}")

    def raise_if_failed(self) -> None:
        if self.failure is None:
            return
        unit_id, message, cause = self.failure
        raise UnitFailedError(
            unit_id, f"unit {unit_id} failed: {message}; {len(self.finished)} of {len(self.todo)} units finished "
            "and are kept; fix the cause and run the same command again to resume"
        ) from cause


@contextmanager
def _tracking(todo: Sequence[Unit], progress: bool) -> Iterator[_Tracker]:
    if not progress:
        yield _Tracker(todo)
        return
    with live_display() as display:  # the parent's display only; workers never draw
        tracker = _Tracker(todo, display)
        yield tracker
        display.update(tracker.task, description="study: " + ("failed" if tracker.failure else "done"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# ---- local: a pool of worker processes ----------------------------------------------------

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


def _init_worker(threads: int, gpus: Any, log_level: int) -> None:
    """Runs first in every worker: pin a GPU before CUDA starts, share out the CPU threads."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s [%(processName)s]: %(message)s")


def run_local(todo: list[Unit], config: StudyConfig, run_dir: Path, *, progress: bool = False,
              runner: UnitRunner = run_unit, jobs: int | None = None) -> list[str]:
    """Run ``todo`` in ``jobs`` (default ``config.launcher.jobs``) worker processes, each unit
    once its dependencies are done, in plan order among the ready ones; return the ids run."""
    jobs = config.launcher.jobs if jobs is None else jobs
    if jobs < 1:
        raise ContrastlabError(f"launcher.jobs must be at least 1, got {jobs}")
    waiting = {uid: set(deps) for uid, deps in pending_dependencies(todo).items()}
    if not todo:
        return []
    context = mp.get_context("spawn")  # fork would copy torch's thread pools and any CUDA state
    slots = gpu_slots(jobs, config.device)
    gpus = None
    if slots is not None:
        gpus = context.Queue()
        for slot in slots:
            gpus.put(slot)
    threads = threads_per_job(jobs)
    log.info("local launcher: %d units, %d workers, %d threads each%s", len(todo), jobs, threads,
             f", GPUs {','.join(slots)}" if slots else "")

    started: set[str] = set()
    running: dict[Future, Unit] = {}
    with _tracking(todo, progress) as tracker, ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_init_worker,
        initargs=(threads, gpus, logging.getLogger().getEffectiveLevel()),
    ) as pool:
        try:
            while True:
                if tracker.failure is None:
                    for unit in todo:
                        if len(running) >= jobs:
                            break
                        if unit.id in started or waiting[unit.id]:
                            continue
                        running[pool.submit(runner, unit, config, run_dir)] = unit
                        started.add(unit.id)
                        tracker.started(unit)
                if not running:
                    break
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: todo.index(running[f])):
                    unit = running.pop(future)
                    error = future.exception()
                    if error is None:
                        tracker.succeeded(unit, future.result())
                        for deps in waiting.values():
                            deps.discard(unit.id)
                    elif isinstance(error, BrokenProcessPool):
                        tracker.failed(unit, "its worker process died (killed, or out of memory?)", error)
                    else:  # the worker's traceback travels as the exception's cause
                        tracker.failed(unit, _first_line(error), error, "".join(traceback.format_exception(error)))
        except BaseException:
            # Interrupted (Ctrl-C) or failing here: stop the workers now rather than let the
            # pool wait for units that may run for hours. Their partial work stays resumable.
            log.warning("stopping %d running units; finished units are kept, run again to resume", len(running))
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    tracker.raise_if_failed()
    never = [u.id for u in todo if u.id not in started]
    if never:  # unreachable for a plan from plan_units: every dependency is in todo or done
        raise ContrastlabError(f"{len(never)} units never became ready, e.g. {never[0]}")
    return tracker.finished


# ---- one unit on several processes (torchrun, or a multi-task Slurm job) --------------------

def _wait_until_done(unit: Unit, run_dir: Path, poll_s: float = 5.0) -> None:
    # A file poll, not a barrier: an analysis on rank 0 can outlast any collective's timeout.
    while not is_done(unit, run_dir):
        time.sleep(poll_s)


def run_unit_distributed(unit: Unit, config: StudyConfig, run_dir: Path) -> float:
    """Run ``unit`` in every process of an initialized process group; return seconds taken.

    Pretraining runs data-parallel on all ranks (rank 0 writes the folder); every other unit
    runs on rank 0 while the others wait for its ``done.json``. Outside a process group this
    is :func:`run_unit`.
    """
    import torch.distributed as torch_dist

    from ..distributed import is_distributed, rank
    from .units import run_pretrain

    if not is_distributed():
        return run_unit(unit, config, run_dir)
    started = time.perf_counter()
    if unit.kind != "pretrain" or unit.method == RANDOM:
        if rank() == 0:
            return run_unit(unit, config, run_dir)
        _wait_until_done(unit, run_dir)
        return time.perf_counter() - started
    if rank() == 0:
        prepare_unit_folder(unit, run_dir)
    torch_dist.barrier()  # no rank looks for checkpoints before stale work is gone
    if rank() == 0:
        return run_unit(unit, config, run_dir)
    record = {"unit": unit.id, "unit_key": unit.key, "study": config.name}
    run_pretrain(unit, config, unit.folder(run_dir), record, False)  # rank > 0 writes nothing
    return time.perf_counter() - started


# ---- slurm (submitit) ---------------------------------------------------------------------

def is_data_parallel(unit: Unit, launcher: LauncherConfig) -> bool:
    """Whether ``unit`` runs one process per GPU under Slurm (pretraining with several GPUs)."""
    return unit.kind == "pretrain" and unit.method != RANDOM and launcher.gpus_per_job > 1


def job_parameters(unit: Unit, launcher: LauncherConfig, *, study: str, dependencies: Sequence[str] = ()) -> dict[str, Any]:
    """The ``AutoExecutor.update_parameters`` keywords of ``unit``'s job; ``dependencies``: the
    Slurm job ids it must wait for (they must end well: ``afterok``)."""
    parallel = is_data_parallel(unit, launcher)
    params: dict[str, Any] = {
        "name": f"{study}:{unit.id}".replace("/", "."),
        "timeout_min": launcher.time_minutes,
        "mem_gb": launcher.mem_gb,
        "nodes": 1,
        "tasks_per_node": launcher.gpus_per_job if parallel else 1,
        "gpus_per_node": launcher.gpus_per_job if parallel else min(1, launcher.gpus_per_job),
        "cpus_per_task": launcher.cpus_per_job,
    }
    if launcher.partition:
        params["slurm_partition"] = launcher.partition
    # One failed process of a data-parallel job ends the job instead of leaving the others
    # blocked in a collective until the time limit.
    params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
    extra = {str(k): str(v) for k, v in launcher.slurm_options.items()}
    if dependencies:
        # Without kill-on-invalid-dep a job whose dependency failed would wait in the queue forever.
        extra.update({"dependency": "afterok:" + ":".join(str(j) for j in dependencies), "kill-on-invalid-dep": "yes"})
    # Always set, even empty: submitit keeps parameters between submissions, and a dependency
    # left over from the previous unit would hold this one back.
    params["slurm_additional_parameters"] = extra
    return params


def is_slurm_executor(executor: Any) -> bool:
    """True for an executor whose jobs Slurm holds back until their dependencies are done."""
    import submitit

    return getattr(executor, "cluster", None) == "slurm" or isinstance(executor, submitit.SlurmExecutor)


def slurm_executor(run_dir: Path) -> Any:
    """A submitit executor for this Slurm cluster, logging to ``RUN_DIR/slurm``."""
    try:
        import submitit
    except ImportError:
        raise ContrastlabError("the slurm launcher needs submitit: pip install 'contrastlab[slurm]'") from None
    try:
        return submitit.AutoExecutor(folder=run_dir / "slurm", cluster="slurm")
    except RuntimeError as exc:
        raise ContrastlabError(f"the slurm launcher found no Slurm here ({exc}); use --launcher local") from None


def run_unit_job(unit: Unit, config: StudyConfig, run_dir: Path) -> float:
    """What one submitit job (each of its tasks) runs: set up threads, and torch.distributed when
    the job has several tasks; run the unit; return seconds taken."""
    import torch

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, min(config.launcher.cpus_per_job, available_cpus())))
    tasks = 1
    try:
        import submitit

        tasks = submitit.JobEnvironment().num_tasks
    except (ImportError, RuntimeError):  # not inside a submitit job
        pass
    if tasks <= 1:
        return run_unit(unit, config, run_dir)
    import submitit.helpers
    import torch.distributed as torch_dist

    from ..distributed import init_from_env

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    init_from_env(config.device)
    try:
        return run_unit_distributed(unit, config, run_dir)
    finally:
        torch_dist.destroy_process_group()


def executor_parameters(executor: Any, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` (AutoExecutor keywords, see :func:`job_parameters`) in the words of ``executor``."""
    import submitit

    if isinstance(executor, submitit.AutoExecutor):
        return params
    generic = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    if isinstance(executor, submitit.SlurmExecutor):
        converted = executor._convert_parameters(generic)  # name -> job_name, timeout_min -> time, ...
        converted.update({k[len("slurm_"):]: v for k, v in params.items() if k.startswith("slurm_")})
        return converted
    return {k: v for k, v in generic.items() if k in ("timeout_min", "gpus_per_node", "tasks_per_node", "nodes")}


def submit_unit(executor: Any, unit: Unit, config: StudyConfig, run_dir: Path, dependencies: Sequence[str] = ()) -> Any:
    """Submit ``unit`` as one job of ``executor`` (after the jobs ``dependencies``); return the job."""
    params = job_parameters(unit, config.launcher, study=config.name, dependencies=dependencies)
    executor.update_parameters(**executor_parameters(executor, params))
    return executor.submit(run_unit_job, unit, config, run_dir)


def submit_all(executor: Any, todo: Sequence[Unit], config: StudyConfig, run_dir: Path) -> dict[str, Any]:
    """Submit every unit of ``todo`` at once, in plan order, each held back by Slurm until the
    jobs of its dependencies ended well; return unit id -> submitit job."""
    jobs: dict[str, Any] = {}
    for unit, deps in slurm_jobs(todo):
        jobs[unit.id] = submit_unit(executor, unit, config, run_dir, [jobs[d].job_id for d in deps])
        log.info("submitted %s as job %s%s", unit.id, jobs[unit.id].job_id,
                 f" after {', '.join(jobs[d].job_id for d in deps)}" if deps else "")
    return jobs


def _job_error_line(error: BaseException) -> str:
    """The line that says what went wrong in a submitit job error (whose text holds the job's trace)."""
    lines = [line.rstrip() for line in str(error).splitlines()]
    rules = [i for i, line in enumerate(lines) if line.startswith("-----")]
    if len(rules) >= 2:  # FailedJobError: the trace sits between two rules; its last line is the exception
        trace = [line for line in lines[rules[-2] + 1 : rules[-1]] if line.strip()]
        if trace:
            return trace[-1].strip()
    return _first_line(error)


def _job_outcome(job: Any, unit: Unit, run_dir: Path) -> tuple[str | None, BaseException | None]:
    """(None, None) when the job ran ``unit`` to its done.json, else (message, exception)."""
    error = job.exception()
    paths = getattr(job, "paths", None)
    where = f"; log: {paths.stderr}" if paths is not None else ""
    if error is not None:
        return f"job {job.job_id}: {_job_error_line(error)}{where}", error
    if not is_done(unit, run_dir):
        return f"job {job.job_id} ended without writing {unit.id}/done.json{where}", None
    return None, None


def run_jobs(executor: Any, todo: list[Unit], config: StudyConfig, run_dir: Path, *, progress: bool = False,
             poll_s: float | None = None) -> list[str]:
    """Run ``todo`` as submitit jobs of ``executor``, wait for them, return the ids run.

    A Slurm executor gets every job at once with ``afterok`` dependencies; any other executor
    gets a unit when its dependencies are done, ``config.launcher.jobs`` at a time.
    """
    slurm = is_slurm_executor(executor)
    poll_s = (SLURM_POLL_S if slurm else LOCAL_POLL_S) if poll_s is None else poll_s
    limit = len(todo) if slurm else max(1, config.launcher.jobs)
    graph = pending_dependencies(todo)
    units = {u.id: u for u in todo}
    failed: set[str] = set()
    in_flight: dict[str, Any] = {}
    with _tracking(todo, progress) as tracker:
        try:
            if slurm:
                in_flight = submit_all(executor, todo, config, run_dir)
                tracker.queued(todo)
            submitted = set(in_flight)
            while True:
                if not slurm and tracker.failure is None:
                    for unit in todo:
                        if len(in_flight) >= limit:
                            break
                        if unit.id not in submitted and all(d in tracker.finished for d in graph[unit.id]):
                            in_flight[unit.id] = submit_unit(executor, unit, config, run_dir)
                            submitted.add(unit.id)
                            tracker.started(unit)
                if not in_flight:
                    break
                ended = [uid for uid, job in in_flight.items() if job.done()]  # in plan order
                for uid in ended:
                    message, error = _job_outcome(in_flight.pop(uid), units[uid], run_dir)
                    if message is None:
                        tracker.succeeded(units[uid], None)
                        continue
                    failed.add(uid)
                    broken = [d for d in graph[uid] if d in failed]
                    if broken:  # Slurm dropped it (kill-on-invalid-dep): not a failure of its own
                        tracker.failed(units[uid], f"not run, its dependency {broken[0]} failed")
                    else:
                        tracker.failed(units[uid], message, error, str(error) if error is not None else "")
                if not ended:
                    time.sleep(poll_s)
        except BaseException:
            # Stop what was submitted: a second run of the same command would otherwise
            # start the same units again while these jobs still write their folders.
            for uid, job in in_flight.items():
                try:
                    job.cancel(check=False)
                except Exception:  # noqa: BLE001 - best effort while already failing
                    log.warning("could not cancel job %s of %s", getattr(job, "job_id", "?"), uid)
            if in_flight:
                log.warning("cancelled %d submitted jobs; finished units are kept", len(in_flight))
            raise
    tracker.raise_if_failed()
    return tracker.finished


def run_slurm(todo: list[Unit], config: StudyConfig, run_dir: Path, *, executor: Any = None,
              progress: bool = False, poll_s: float | None = None) -> list[str]:
    """Run ``todo`` as Slurm jobs through submitit (or through ``executor``, e.g. submitit's
    ``LocalExecutor`` in tests); return the ids of the units run."""
    if not todo:
        return []
    if executor is None:
        executor = slurm_executor(run_dir)
    return run_jobs(executor, todo, config, run_dir, progress=progress, poll_s=poll_s)
