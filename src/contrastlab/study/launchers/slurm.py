"""The slurm backend: one submitit job per unit.

A Slurm executor gets every unit at once, in plan order, a dependent job waiting in the queue
(``--dependency=afterok:<job ids>``) until its dependencies' jobs ended well. Executors that
cannot hold jobs back (submitit's ``LocalExecutor``, ``DebugExecutor``) get each unit only once
its dependencies are done, ``launcher.jobs`` at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...config import LauncherConfig, StudyConfig
from ...errors import ContrastlabError
from ...rundir import MANIFEST, unit_file
from ..plan import RANDOM, Unit
from ..units import is_done, run_unit
from .local import available_cpus
from .loop import Backend, Failure, Outcome, first_line, pending_dependencies
from .torchrun import run_unit_distributed

log = logging.getLogger(__package__)

SLURM_POLL_S = 30.0  # sacct is queried at most this often
LOCAL_POLL_S = 0.5  # how often a non-Slurm submitit executor's jobs are checked


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

    from ...distributed import init_from_env

    # RANK, LOCAL_RANK, WORLD_SIZE, MASTER_*; the GPU of each task is then found whether Slurm bound one GPU
    # per task (it sees cuda:0 only) or every task sees the node's GPUs (distributed.local_cuda_index).
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
    backend = Submitit(executor, config, run_dir)
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
    return first_line(error)


def _job_failure(job: Any, unit: Unit, run_dir: Path) -> Failure | None:
    """None when ``job`` ran ``unit`` to its done.json, else (message, exception, details to log)."""
    error = job.exception()
    paths = getattr(job, "paths", None)
    where = f"; log: {paths.stderr}" if paths is not None else ""
    if error is not None:
        return f"job {job.job_id}: {_job_error_line(error)}{where}", error, str(error)
    if not is_done(unit, run_dir):
        return f"job {job.job_id} ended without writing {unit_file(unit.id, MANIFEST)}{where}", None, ""
    return None


class Submitit(Backend):
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
