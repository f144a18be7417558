"""Launchers: the one ready-unit loop over its sequential, local (process pool) and Slurm
(submitit) backends; the torchrun backend is tested in test_torchrun.py.

A micro study run with ``--launcher local --jobs 2`` writes the same numbers as the sequential
run (same torch thread count per unit, so bit-identical on CPU) and resumes after a cut; the
Slurm path builds one job per unit with ``afterok`` dependencies (checked in the sbatch
scripts submitit writes, with fake ``sbatch``/``srun`` on PATH) and runs end to end through
submitit's LocalExecutor.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from contrastlab.config_checks import load_config
from contrastlab.errors import ContrastlabError
from contrastlab.rundir import write_manifest
from contrastlab.study.launchers import run_units
from contrastlab.study.launchers import slurm as slurm_backend
from contrastlab.study.launchers.local import threads_per_job
from contrastlab.study.launchers.loop import UnitFailedError, pending_dependencies
from contrastlab.study.launchers.slurm import job_parameters, run_unit_job, submit_all
from contrastlab.study.plan import Unit, plan_units
from contrastlab.study.runner import pending_units, prepare_run_dir, run_study
from contrastlab.study.units import is_done
from helpers import MICRO_STUDY

JOBS = 2
# The shared micro study (helpers.MICRO_STUDY: sequential unless a test says otherwise) on the CPU,
# with one of its two tasks: every kind of unit, 19 units instead of 32, a third of the landscape figures.
MICRO = [*MICRO_STUDY, "device=cpu", "data.tasks=[[0,1,2]]"]


def micro_config(*extra: str):
    return load_config("quick", MICRO + list(extra))


# ---- comparing two run directories ----------------------------------------------------------

VOLATILE = {"seconds", "finished", "images_per_s", "created", "timestamp", "provenance", "hostname", "time"}
BOOKKEEPING = {"done.json", "unit.json", "study.json", "config.yaml", "stage_times.csv"}


def _volatile(column: str) -> bool:
    return column in VOLATILE or "seconds" in column or "images/s" in column


def _clean(value, run_dir: Path):
    if isinstance(value, dict):
        return {k: _clean(v, run_dir) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_clean(v, run_dir) for v in value]
    if isinstance(value, str):
        return value.replace(str(run_dir), "RUN")
    return value


def results_of(run_dir: Path, units: list[str] | None = None) -> dict[str, object]:
    """Every number a run wrote (json, csv, npy, safetensors), keyed by path; timings dropped."""
    out: dict[str, object] = {}
    roots = [run_dir / u for u in units] if units is not None else [run_dir]
    for root in roots:
        for path in sorted(root.rglob("*")):
            rel = str(path.relative_to(run_dir))
            if not path.is_file() or path.name in BOOKKEEPING or rel.startswith("slurm"):
                continue
            if rel.startswith("report") and not rel.startswith("report/tables/"):
                continue  # figures and HTML: drawn from the tables compared here
            if path.suffix == ".json":
                out[rel] = _clean(json.loads(path.read_text()), run_dir)
            elif path.suffix == ".csv":
                with open(path, newline="") as f:
                    out[rel] = [{k: v for k, v in row.items() if not _volatile(k)} for row in csv.DictReader(f)]
            elif path.suffix == ".npy":
                out[rel] = np.load(path).tolist()
            elif path.suffix == ".safetensors":
                out[rel] = {k: v.tolist() for k, v in load_file(path).items()}
    return out


def assert_same_results(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key] == b[key], key


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The micro study run sequentially with the thread count a local worker of JOBS gets."""
    run_dir = tmp_path_factory.mktemp("sequential")
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_job(JOBS))
    try:
        summary = run_study(micro_config(), run_dir)
    finally:
        torch.set_num_threads(threads)
    assert summary.ran and not summary.skipped
    return run_dir


# ---- dependencies and job parameters (pure) -------------------------------------------------

def test_pending_dependencies_drop_finished_units_and_keep_plan_order():
    units = plan_units(micro_config("analysis.geometry.enabled=true"))
    todo = [u for u in units if u.id != "pretrain/simclr/seed0"]  # as if it were done
    graph = pending_dependencies(todo)
    assert graph["finetune/simclr/seed0/task-0-1-2"] == []
    assert graph["finetune/supce/seed0/task-0-1-2"] == ["pretrain/supce/seed0"]
    geometry = next(u for u in todo if u.kind == "geometry")
    assert graph[geometry.id] == list(geometry.deps) and len(geometry.deps) == 3  # simclr, supce, random
    assert list(graph) == [u.id for u in todo]
    with pytest.raises(ContrastlabError, match="listed before its dependency"):
        pending_dependencies(list(reversed(todo)))


def test_job_parameters_take_the_launcher_config():
    config = micro_config("launcher.kind=slurm", "launcher.partition=gpu", "launcher.gpus_per_job=4",
                          "launcher.cpus_per_job=6", "launcher.time_minutes=90", "launcher.mem_gb=48",
                          "launcher.slurm_options={account: proj}")
    units = {u.id: u for u in plan_units(config)}
    pre = job_parameters(units["pretrain/simclr/seed0"], config.launcher, study="quick")
    assert pre == {"name": "quick:pretrain.simclr.seed0", "timeout_min": 90, "mem_gb": 48, "nodes": 1,
                   "tasks_per_node": 4, "gpus_per_node": 4, "cpus_per_task": 6, "slurm_partition": "gpu",
                   "slurm_srun_args": ["--kill-on-bad-exit=1"], "slurm_additional_parameters": {"account": "proj"}}
    fine = job_parameters(units["finetune/simclr/seed0/task-0-1-2"], config.launcher, study="quick", dependencies=["17"])
    assert fine["tasks_per_node"] == 1 and fine["gpus_per_node"] == 1  # one GPU is all a probe can use
    assert fine["slurm_additional_parameters"] == {"account": "proj", "dependency": "afterok:17", "kill-on-invalid-dep": "yes"}
    rand = job_parameters(units["pretrain/random/seed0"], config.launcher, study="quick")
    assert rand["tasks_per_node"] == 1 and rand["slurm_additional_parameters"] == {"account": "proj"}
    cpu = job_parameters(units["pretrain/simclr/seed0"], micro_config("launcher.gpus_per_job=0").launcher, study="s")
    assert cpu["gpus_per_node"] == 0 and cpu["tasks_per_node"] == 1 and "slurm_partition" not in cpu
    assert cpu["slurm_additional_parameters"] == {}  # set anyway: submitit keeps the last job's otherwise


def _fake_slurm(bin_dir: Path) -> None:
    """``srun`` (so submitit detects a cluster) and ``sbatch`` that numbers jobs from 101."""
    bin_dir.mkdir()
    scripts = {
        "srun": "#!/bin/sh\nexit 0\n",
        "sbatch": '#!/bin/sh\nn=$(cat "$0.count" 2>/dev/null || echo 100)\nn=$((n + 1))\necho $n > "$0.count"\n'
                  'echo "Submitted batch job $n"\n',
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _sbatch_flags(script: str) -> dict[str, str]:
    flags = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --"):].partition("=")
            flags[key] = value
    return flags


def test_slurm_submission_has_one_job_per_unit_with_afterok_dependencies(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    _fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    config = micro_config("launcher.kind=slurm", "launcher.partition=gpu", "launcher.gpus_per_job=2",
                          "launcher.time_minutes=30", "launcher.mem_gb=16", "analysis.geometry.enabled=true")
    units = plan_units(config)
    todo = [u for u in units if u.id != "pretrain/supce/seed0"]  # done already: its dependents wait for nothing
    executor = submitit.AutoExecutor(folder=tmp_path / "slurm")
    assert executor.cluster == "slurm"
    # submitit waits 0.2 s between two sbatch calls (a courtesy to a real scheduler): 6 s here for nothing.
    monkeypatch.setattr(executor._executor, "_throttling", 0.0, raising=False)
    jobs = submit_all(executor, todo, config, tmp_path / "run")
    assert list(jobs) == [u.id for u in todo]
    assert sorted(int(j.job_id) for j in jobs.values()) == list(range(101, 101 + len(todo)))
    for unit in todo:
        job = jobs[unit.id]
        flags = _sbatch_flags(job.paths.submission_file.read_text())
        deps = [jobs[d].job_id for d in unit.deps if d in jobs]
        if deps:
            assert flags["dependency"] == "afterok:" + ":".join(deps), unit.id
            assert flags["kill-on-invalid-dep"] == "yes"
        else:
            assert "dependency" not in flags, unit.id
        parallel = unit.kind == "pretrain" and unit.method != "random"
        assert flags["partition"] == "gpu" and flags["time"] == "30" and flags["mem"] == "16GB"
        assert flags["gpus-per-node"] == ("2" if parallel else "1")
        assert flags["ntasks-per-node"] == ("2" if parallel else "1")
        assert flags["job-name"] == "quick:" + unit.id.replace("/", ".")
        assert "--kill-on-bad-exit=1" in job.paths.submission_file.read_text()
        submission = job.submission()
        assert submission.function is run_unit_job and submission.args[0] == unit
        assert submission.args[2] == tmp_path / "run"
    finetune = jobs["finetune/supce/seed0/task-0-1-2"]
    assert "dependency" not in _sbatch_flags(finetune.paths.submission_file.read_text())
    geometry = next(u for u in todo if u.kind == "geometry")
    assert len(_sbatch_flags(jobs[geometry.id].paths.submission_file.read_text())["dependency"].split(":")) == 4


def test_slurm_launcher_without_slurm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    config = micro_config("launcher.kind=slurm")
    with pytest.raises(ContrastlabError, match="found no Slurm|needs submitit"):
        run_units(plan_units(config)[:1], config, tmp_path)


# ---- the loop on stand-in units: sequential and local backends -------------------------------

def record_run(unit: Unit, config, run_dir: Path, progress: bool = False) -> float:
    """A stand-in unit runner (top level, so spawn workers import it): logs its start and end,
    fails when ``run_dir/fail-<id>`` exists, writes done.json otherwise. The units named in
    ``run_dir/together`` wait (up to a minute) until all of them have started: units that can run
    at once overlap however late a busy machine starts the second worker."""
    started = time.time()
    together = run_dir / "together"
    group = together.read_text().split() if together.exists() else []
    if unit.id in group:
        (run_dir / f"started-{unit.id}").write_text("")
        while not all((run_dir / f"started-{uid}").exists() for uid in group) and time.time() < started + 60:
            time.sleep(0.01)
    time.sleep(0.2)
    if (run_dir / f"fail-{unit.id}").exists():
        raise ValueError(f"injected failure in {unit.id}")
    folder = unit.folder(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "times.json").write_text(json.dumps([started, time.time(), torch.get_num_threads(), progress, os.getpid()]))
    write_manifest(folder, {"unit": unit.id, "kind": unit.kind, "key": unit.key})
    return time.time() - started


def toy_units() -> list[Unit]:
    """a, b independent; c after a; d after a and b; e after c."""
    spec = {"a": (), "b": (), "c": ("a",), "d": ("a", "b"), "e": ("c",)}
    return [Unit("finetune", uid, f"key-{uid}", deps=deps) for uid, deps in spec.items()]


def test_sequential_backend_runs_in_plan_order_in_this_process_and_stops_at_the_first_failure(tmp_path):
    config = micro_config()  # launcher.kind: sequential
    assert config.launcher.kind == "sequential"
    units = toy_units()
    (tmp_path / "fail-c").write_text("")
    with pytest.raises(UnitFailedError, match=r"unit c failed: ValueError: injected failure in c") as info:
        run_units(units, config, tmp_path, runner=record_run)
    assert info.value.unit_id == "c" and "2 of 5 units finished" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
    assert [u.id for u in units if is_done(u, tmp_path)] == ["a", "b"]  # d and e never started
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()

    (tmp_path / "fail-c").unlink()
    todo = [u for u in units if not is_done(u, tmp_path)]
    assert run_units(todo, config, tmp_path, runner=record_run, progress=True) == ["c", "d", "e"]
    times = [json.loads((tmp_path / uid / "times.json").read_text()) for uid in "abcde"]
    assert all(earlier[1] <= later[0] for earlier, later in zip(times, times[1:]))  # one at a time, in plan order
    assert {t[4] for t in times} == {os.getpid()}  # in this process
    assert [t[3] for t in times] == [False, False, True, True, True]  # the stages draw into the study's display


def test_local_scheduler_respects_dependencies_and_the_job_limit(tmp_path):
    config = micro_config("launcher.kind=local", f"launcher.jobs={JOBS}")
    units = toy_units()
    (tmp_path / "together").write_text("a b")  # both ready at the start: each waits for the other
    ran = run_units(units, config, tmp_path, runner=record_run)
    assert sorted(ran) == ["a", "b", "c", "d", "e"]
    times = {u.id: json.loads((tmp_path / u.id / "times.json").read_text()) for u in units}
    for unit in units:
        for dep in unit.deps:
            assert times[dep][1] <= times[unit.id][0], f"{unit.id} started before {dep} ended"
    events = sorted([(t[0], 1) for t in times.values()] + [(t[1], -1) for t in times.values()])
    running = np.cumsum([e[1] for e in events])
    assert running.max() == JOBS  # a and b together, never three at once
    assert {t[2] for t in times.values()} == {threads_per_job(JOBS)}


def environment_run(unit: Unit, config, run_dir: Path, progress: bool = False) -> float:
    """A stand-in unit runner: records the worker's environment variable CONTRASTLAB_TEST_MARK and
    the worker's process id."""
    folder = unit.folder(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "env.json").write_text(json.dumps([os.environ.get("CONTRASTLAB_TEST_MARK"), os.getpid()]))
    write_manifest(folder, {"unit": unit.id, "kind": unit.kind, "key": unit.key})
    return 0.0


def test_local_workers_see_the_environment_of_the_moment_their_pool_starts(tmp_path, monkeypatch):
    # The fork server of this process may have started long ago, with another environment.
    config = micro_config("launcher.kind=local", "launcher.jobs=1")
    for mark in ("first", "second"):
        monkeypatch.setenv("CONTRASTLAB_TEST_MARK", mark)
        units = [Unit("finetune", f"{mark}-unit", f"key-{mark}")]
        assert run_units(units, config, tmp_path, runner=environment_run) == [f"{mark}-unit"]
        seen, pid = json.loads((tmp_path / f"{mark}-unit" / "env.json").read_text())
        assert seen == mark and pid != os.getpid()
    monkeypatch.delenv("CONTRASTLAB_TEST_MARK")
    assert run_units([Unit("finetune", "none", "key-none")], config, tmp_path, runner=environment_run) == ["none"]
    assert json.loads((tmp_path / "none" / "env.json").read_text())[0] is None


def test_worker_context_is_a_fork_server_that_has_imported_the_stages():
    from contrastlab.utils.workers import has_fork_server, worker_context

    context = worker_context()
    if not has_fork_server():  # macOS, Windows
        assert context.get_start_method() == "spawn"
        return
    assert context.get_start_method() == "forkserver"
    # eval is a builtin: unpickling it imports nothing, unlike a function of this module (which imports torch).
    probe = "[name in __import__('sys').modules for name in ('torch', 'contrastlab.study.units', 'matplotlib.figure')]"
    with context.Pool(1) as pool:
        assert pool.apply(eval, (probe,)) == [True, True, True]


def test_local_failure_stops_scheduling_names_the_unit_and_resumes(tmp_path):
    config = micro_config("launcher.kind=local", "launcher.jobs=1")  # one at a time: a, b, c fails; d, e never start
    units = toy_units()
    (tmp_path / "fail-c").write_text("")
    with pytest.raises(UnitFailedError, match=r"unit c failed: ValueError: injected failure in c") as info:
        run_units(units, config, tmp_path, runner=record_run)
    assert info.value.unit_id == "c" and "2 of 5 units finished" in str(info.value)
    assert [u.id for u in units if is_done(u, tmp_path)] == ["a", "b"]
    (tmp_path / "fail-c").unlink()
    todo = [u for u in units if not is_done(u, tmp_path)]
    assert run_units(todo, config, tmp_path, runner=record_run) == ["c", "d", "e"]


# ---- the micro study ------------------------------------------------------------------------

def test_micro_study_with_local_launcher_matches_sequential_and_resumes(sequential, tmp_path):
    config = micro_config("launcher.kind=local", f"launcher.jobs={JOBS}")
    summary = run_study(config, tmp_path)  # the report is built once every unit is done
    assert sorted(summary.ran) == sorted(u.id for u in plan_units(config))
    assert summary.report is not None and summary.report.exists()
    expected = results_of(sequential)
    for kind in ("metrics.csv", "result.json", "surface.npy", "sharpness.json", "pgd.csv", "progress.csv", "inpca.npy",
                 "report/tables/accuracy.csv"):
        assert any(path.endswith(kind) for path in expected), kind  # every stage is compared
    assert_same_results(results_of(tmp_path), expected)

    # Cut the run: one probe and everything after it lost; the same command finishes just those.
    lost = [u for u in plan_units(config) if u.id == "finetune/supce/seed0/task-0-1-2" or "finetune/supce/seed0/task-0-1-2" in u.deps]
    assert {u.kind for u in lost} == {"finetune", "landscape", "sharpness", "robustness", "geometry", "trajectory"}
    for unit in lost:
        shutil.rmtree(tmp_path / unit.id)
    again = run_study(config, tmp_path, build_report=False)
    assert sorted(again.ran) == sorted(u.id for u in lost) and len(again.skipped) == len(plan_units(config)) - len(lost)
    assert_same_results(results_of(tmp_path), expected)
    assert run_study(config, tmp_path, build_report=False).ran == []


def test_slurm_path_runs_through_submitit_local_executor(sequential, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(slurm_backend, "LOCAL_POLL_S", 0.05)  # how often the loop looks at the local jobs
    # Each job sets cpus_per_job torch threads: those of the sequential run, so the numbers match.
    config = micro_config("launcher.kind=slurm", f"launcher.jobs={JOBS}", "launcher.gpus_per_job=0",
                          f"launcher.cpus_per_job={threads_per_job(JOBS)}", "launcher.time_minutes=5")
    prepare_run_dir(config, tmp_path)
    todo, _ = pending_units(config, tmp_path)
    # pretrain -> probe -> one analysis of the probe: each job is a process of its own, so three and no more.
    chain = [u for u in todo if u.method == "supce" and (u.task in (None, 0))][:3]
    assert [u.kind for u in chain] == ["pretrain", "finetune", "landscape"]
    executor = submitit.AutoExecutor(folder=tmp_path / "slurm", cluster="local")
    ran = run_units(chain, config, tmp_path, executor=executor)
    assert sorted(ran) == sorted(u.id for u in chain)
    assert ran.index(chain[0].id) < ran.index(chain[1].id) < ran.index(chain[2].id)
    assert all(is_done(u, tmp_path) for u in chain)
    ids = [u.id for u in chain]
    assert_same_results(results_of(tmp_path, ids), results_of(sequential, ids))


def test_failing_slurm_job_names_its_unit(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(slurm_backend, "LOCAL_POLL_S", 0.05)
    config = micro_config("launcher.kind=slurm", "launcher.gpus_per_job=0", "launcher.cpus_per_job=1", "launcher.time_minutes=5")
    prepare_run_dir(config, tmp_path)
    todo, _ = pending_units(config, tmp_path)
    chain = [u for u in todo if u.method == "supce" and u.task in (None, 0)][:2]
    (tmp_path / chain[0].id).parent.mkdir(parents=True)
    (tmp_path / chain[0].id).write_text("a file where the unit's folder goes")  # makes run_unit fail at once
    executor = submitit.AutoExecutor(folder=tmp_path / "slurm", cluster="local")
    with pytest.raises(UnitFailedError, match=r"unit pretrain/supce/seed0 failed: job \d+: .*Error") as info:
        run_units(chain, config, tmp_path, executor=executor)
    assert info.value.unit_id == chain[0].id and not is_done(chain[1], tmp_path)
    assert not (tmp_path / chain[1].id).exists()  # its dependent was never submitted
