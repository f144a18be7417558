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
- ``local``: a pool of ``launcher.jobs`` worker processes (``spawn``); each worker gets
  ``cpus // jobs`` torch threads and, on a machine with GPUs, its own GPU (round-robin).
- ``slurm``: one submitit job per unit. A Slurm executor gets every unit at once, in plan
  order, a dependent job waiting in the queue (``--dependency=afterok:<job ids>``) until its
  dependencies' jobs ended well. Pretraining jobs with ``launcher.gpus_per_job > 1`` run one
  process per GPU (data-parallel, :func:`run_unit_distributed`); every other job takes one
  GPU. Executors that cannot hold jobs back (submitit's ``LocalExecutor``, ``DebugExecutor``)
  get each unit only once its dependencies are done, ``launcher.jobs`` at a time.
- ``torchrun``: inside an initialized process group every rank runs the same units in plan
  order, one at a time (:func:`run_unit_distributed`): pretraining data-parallel on all ranks,
  every other unit on rank 0 while the other ranks wait for its ``done.json``.
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

# A unit runner: runner(unit, config, run_dir) -> seconds; the sequential backend adds
# progress=True when the study shows progress. Local workers need a top-level function (pickled).
UnitRunner = Callable[..., float]
SLURM_POLL_S = 30.0  # sacct is queried at most this often
LOCAL_POLL_S = 0.5  # how often a non-Slurm submitit executor's jobs are checked
DISTRIBUTED_POLL_S = 5.0  # how often ranks > 0 look for the done.json of a unit that rank 0 runs
KINDS = ("sequential", "local", "slurm")

# (unit, seconds or None, failure): failure is None or (message, cause, details to log)
Outcome = tuple[Unit, "float | None", "tuple[str, BaseException | None, str] | None"]


class UnitFailedError(ContrastlabError):
    """A unit of the study failed; the units finished before it are kept."""

    def __init__(self, unit_id: str, message: str):
        super().__init__(message)
        self.unit_id = unit_id

    def __reduce__(self):  # picklable despite the extra constructor argument
        return (type(self), (self.unit_id, str(self)))


def run_units(todo: list[Unit], config: StudyConfig, run_dir: str | Path, *, progress: bool = False,
              executor: Any = None, runner: UnitRunner = run_unit) -> list[str]:
    """Run ``todo`` (units in plan order; a dependency outside it is already done); return the
    ids of the units run, in the order they finished.

    The backend is ``torchrun`` inside an initialized process group, else ``config.launcher.kind``.
    ``executor``: a submitit executor for ``slurm`` (default: a Slurm ``AutoExecutor`` writing
    its logs to ``RUN_DIR/slurm``). ``runner``: what runs one unit (sequential, local workers,
    rank 0 under torchrun); Slurm jobs always run :func:`run_unit_job`.
    """
    from ..distributed import is_distributed

    run_dir = Path(run_dir)
    kind = "torchrun" if is_distributed() else config.launcher.kind
    if kind not in KINDS + ("torchrun",):
        raise ContrastlabError(f"unknown launcher '{kind}'; valid: {', '.join(KINDS)}")
    if not todo:
        return []
    backend: _Backend
    if kind == "sequential":
        backend = _InProcess(lambda unit: runner(unit, config, run_dir, **({"progress": True} if progress else {})))
    elif kind == "torchrun":
        from ..distributed import rank

        backend = _InProcess(lambda unit: run_unit_distributed(unit, config, run_dir, progress=progress, runner=runner),
                             display=rank() == 0)
    elif kind == "local":
        backend = _LocalPool(config, run_dir, runner)
    else:
        backend = _Submitit(executor if executor is not None else slurm_executor(run_dir), config, run_dir)
    with backend:
        ran = _run_ready_units(todo, backend, progress=progress)
    if kind == "torchrun":  # every rank returns once all are through (a failing rank never gets here)
        import torch.distributed as torch_dist

        torch_dist.barrier()
    return ran


# ---- the ready-unit loop ------------------------------------------------------------------

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


class _Backend:
    """Where units run. The loop calls ``start`` for each unit it lets go and ``wait`` for the
    outcomes of the ones that ended; ``stop`` only when the loop itself is interrupted."""

    limit = 1  # units in flight at most
    holds_back = False  # True: it keeps a started unit waiting until its dependencies ended well
    display = True  # whether this process draws the study's progress display

    def __enter__(self) -> "_Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def in_flight(self) -> int:
        raise NotImplementedError

    def start(self, unit: Unit, after: list[str]) -> None:
        """Start ``unit``; ``after``: its dependencies in ``todo`` (all done unless ``holds_back``)."""
        raise NotImplementedError

    def wait(self) -> list[Outcome]:
        """Block until at least one started unit ended; return the ended ones in plan order."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every unit in flight now (Ctrl-C, or an error in the loop itself)."""


def _run_ready_units(todo: list[Unit], backend: _Backend, *, progress: bool = False) -> list[str]:
    """Start every unit of ``todo`` once it is ready, in plan order, at most ``backend.limit`` at
    a time; after a failure start nothing more, let the running ones end, raise UnitFailedError."""
    graph = pending_dependencies(todo)
    started: set[str] = set()
    done: set[str] = set()
    failed: set[str] = set()
    gate = started if backend.holds_back else done  # where a unit's dependencies must be to start it
    with _tracking(todo, progress and backend.display) as tracker:
        try:
            while True:
                if tracker.failure is None:
                    for unit in todo:
                        if backend.in_flight() >= backend.limit:
                            break
                        if unit.id not in started and all(d in gate for d in graph[unit.id]):
                            tracker.started(unit)
                            started.add(unit.id)
                            backend.start(unit, graph[unit.id])
                if not backend.in_flight():
                    break
                for unit, seconds, failure in backend.wait():
                    if failure is None:
                        done.add(unit.id)
                        tracker.succeeded(unit, seconds)
                        continue
                    failed.add(unit.id)
                    broken = [d for d in graph[unit.id] if d in failed]
                    if broken:  # Slurm dropped it (kill-on-invalid-dep): not a failure of its own
                        tracker.failed(unit, f"not run, its dependency {broken[0]} failed")
                    else:
                        tracker.failed(unit, *failure)
        except BaseException:
            backend.stop()
            raise
    tracker.raise_if_failed()
    never = [u.id for u in todo if u.id not in started]
    if never:  # unreachable for a plan from plan_units: every dependency is in todo or done
        raise ContrastlabError(f"{len(never)} units never became ready, e.g. {never[0]}")
    return tracker.finished


class _Tracker:
    """The loop's view of the run: which units finished or failed, logging, progress."""

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
    with live_display() as display:  # this process's display only; workers never draw
        tracker = _Tracker(todo, display)
        yield tracker
        display.update(tracker.task, description="study: " + ("failed" if tracker.failure else "done"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _failure(exc: BaseException) -> tuple[str, BaseException, str]:
    return _first_line(exc), exc, "".join(traceback.format_exception(exc))


# ---- sequential and torchrun: in this process ----------------------------------------------

class _InProcess(_Backend):
    """Runs each unit in ``start``, in this process; ``wait`` hands over its outcome."""

    def __init__(self, call: Callable[[Unit], float], display: bool = True):
        self.call = call
        self.display = display
        self.outcome: Outcome | None = None

    def in_flight(self) -> int:
        return 0 if self.outcome is None else 1

    def start(self, unit: Unit, after: list[str]) -> None:
        try:
            self.outcome = (unit, self.call(unit), None)
        except Exception as exc:  # KeyboardInterrupt goes through: the loop stops at once
            self.outcome = (unit, None, _failure(exc))

    def wait(self) -> list[Outcome]:
        outcome, self.outcome = self.outcome, None
        return [outcome] if outcome is not None else []


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


class _LocalPool(_Backend):
    """``launcher.jobs`` spawned worker processes, each with its threads and GPU."""

    def __init__(self, config: StudyConfig, run_dir: Path, runner: UnitRunner):
        self.config, self.run_dir, self.runner = config, run_dir, runner
        self.limit = config.launcher.jobs
        if self.limit < 1:
            raise ContrastlabError(f"launcher.jobs must be at least 1, got {self.limit}")
        self.running: dict[Future, Unit] = {}
        self.order: dict[str, int] = {}

    def __enter__(self) -> "_LocalPool":
        context = mp.get_context("spawn")  # fork would copy torch's thread pools and any CUDA state
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
                                        initargs=(threads, gpus, logging.getLogger().getEffectiveLevel()))
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
                outcomes.append((unit, None, _failure(error)))
        return sorted(outcomes, key=lambda o: self.order[o[0].id])

    def stop(self) -> None:
        # Stop the workers now rather than let the pool wait for units that may run for hours.
        # Their partial work stays resumable.
        log.warning("stopping %d running units; finished units are kept, run again to resume", len(self.running))
        for process in list((getattr(self.pool, "_processes", None) or {}).values()):
            process.terminate()
        self.pool.shutdown(wait=False, cancel_futures=True)


# ---- one unit on several processes (torchrun, or a multi-task Slurm job) --------------------

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

    from ..distributed import is_distributed, rank
    from .context import unit_context
    from .stages import STAGES

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
    """Submit every unit of ``todo`` to a Slurm ``executor`` as the slurm backend does (in plan
    order, each with ``afterok`` on its dependencies' jobs) without waiting; return unit id -> job."""
    backend = _Submitit(executor, config, run_dir)
    if not backend.holds_back:
        raise ContrastlabError("submit_all needs a Slurm executor: any other runs jobs without waiting for their dependencies")
    graph = pending_dependencies(todo)
    for unit in todo:
        backend.start(unit, graph[unit.id])
    return backend.jobs


def _job_error_line(error: BaseException) -> str:
    """The line that says what went wrong in a submitit job error (whose text holds the job's trace)."""
    lines = [line.rstrip() for line in str(error).splitlines()]
    rules = [i for i, line in enumerate(lines) if line.startswith("-----")]
    if len(rules) >= 2:  # FailedJobError: the trace sits between two rules; its last line is the exception
        trace = [line for line in lines[rules[-2] + 1 : rules[-1]] if line.strip()]
        if trace:
            return trace[-1].strip()
    return _first_line(error)


def _job_failure(job: Any, unit: Unit, run_dir: Path) -> tuple[str, BaseException | None, str] | None:
    """None when ``job`` ran ``unit`` to its done.json, else (message, exception, details to log)."""
    error = job.exception()
    paths = getattr(job, "paths", None)
    where = f"; log: {paths.stderr}" if paths is not None else ""
    if error is not None:
        return f"job {job.job_id}: {_job_error_line(error)}{where}", error, str(error)
    if not is_done(unit, run_dir):
        return f"job {job.job_id} ended without writing {unit.id}/done.json{where}", None, ""
    return None


class _Submitit(_Backend):
    """One submitit job per unit. A Slurm executor holds jobs back (``afterok``), so it gets every
    unit at once; any other executor gets a unit once it is ready, ``launcher.jobs`` at a time."""

    def __init__(self, executor: Any, config: StudyConfig, run_dir: Path):
        self.executor, self.config, self.run_dir = executor, config, run_dir
        self.holds_back = is_slurm_executor(executor)
        self.limit = 1 << 30 if self.holds_back else max(1, config.launcher.jobs)
        self.poll_s = SLURM_POLL_S if self.holds_back else LOCAL_POLL_S
        self.jobs: dict[str, Any] = {}  # unit id -> job, for the afterok ids of its dependents
        self.running: dict[str, Unit] = {}  # submitted, not seen ending; in plan order

    def in_flight(self) -> int:
        return len(self.running)

    def start(self, unit: Unit, after: list[str]) -> None:
        after_jobs = [self.jobs[d].job_id for d in after] if self.holds_back else []
        self.jobs[unit.id] = submit_unit(self.executor, unit, self.config, self.run_dir, after_jobs)
        self.running[unit.id] = unit
        log.info("submitted %s as job %s%s", unit.id, self.jobs[unit.id].job_id,
                 f" after {', '.join(after_jobs)}" if after_jobs else "")

    def wait(self) -> list[Outcome]:
        while True:
            ended = [unit for uid, unit in self.running.items() if self.jobs[uid].done()]
            if ended:
                break
            time.sleep(self.poll_s)
        for unit in ended:
            del self.running[unit.id]
        return [(unit, None, _job_failure(self.jobs[unit.id], unit, self.run_dir)) for unit in ended]

    def stop(self) -> None:
        # Cancel what was submitted: a second run of the same command would otherwise start
        # the same units again while these jobs still write their folders.
        for uid in self.running:
            try:
                self.jobs[uid].cancel(check=False)
            except Exception:  # noqa: BLE001 - best effort while already failing
                log.warning("could not cancel job %s of %s", getattr(self.jobs[uid], "job_id", "?"), uid)
        if self.running:
            log.warning("cancelled %d submitted jobs; finished units are kept", len(self.running))
