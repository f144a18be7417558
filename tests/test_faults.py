"""The faults a user hits with a run directory: each is one line, exits non-zero, and loses no finished work."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contrastlab import rundir
from contrastlab.errors import CorruptFileError, RunDirectoryError
from contrastlab.study.plan import plan_units
from contrastlab.study.runner import run_study
from contrastlab.study.units import is_done
from helpers import MICRO_STUDY, assert_one_line_error, micro_config, run_cli

pytestmark = pytest.mark.slow

# The micro study without the slow analyses: faults are about the run directory, not the numbers.
LEAN = ["analysis.landscape.enabled=false", "analysis.sharpness.enabled=false", "analysis.robustness.enabled=false",
        "random_init_baseline=false"]


@pytest.fixture(scope="module")
def lean_study(tmp_path_factory):
    config = micro_config(*LEAN)
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    run_study(config, run_dir, build_report=False)
    return config, run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    return target


def study_args(out: Path, *extra: str) -> list[str]:
    return ["study", "--preset", "quick", "--out", str(out), "--no-progress",
            *[f"--set={o}" for o in MICRO_STUDY + LEAN + list(extra)]]


@pytest.mark.parametrize("override, message", [
    ("pretrain.batch_size=0", "pretrain.batch_size must be at least 2"),
    ("pretrain.batch_size=1", "pretrain.batch_size must be at least 2"),
    ("model.width=0", "model.width must be at least 1"),
    ("device=banana", "device 'banana'"),
    ("device=cuda", "device 'cuda' is not available"),
    ("analysis.landscape.grid=0", "grid must be odd and >= 3"),
    ("analysis.landscape.grid=2", "grid must be odd and >= 3"),
    ("analysis.landscape.grid=4", "grid must be odd and >= 3"),
    ("analysis.sharpness.params=prob", "analysis.sharpness.params must be one of all, probe"),
    ("analysis.sharpness.trace_samples=2", "trace_samples must be at least 3"),
    ("seeds=[0,0]", "seeds must be distinct"),
    ("data.tasks=[[0,1,500]]", "class 500 is not a class of synth100"),
    ("finetune.lr=nan", "finetune.lr must be a finite number > 0"),
    ("pretrain.lr.simclr=inf", "pretrain.lr.simclr must be a finite number > 0"),
    ("precision=fp16", "precision must be one of auto, fp32, bf16"),
    ("analysis.sharpness.normalization=l2", "normalization must be one of filter, none"),
])
def test_bad_values_fail_at_once_and_write_nothing(override, message, monkeypatch, capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, *study_args(out, override))
    assert_one_line_error(code, err, message)
    assert not out.exists()


def test_a_second_writer_is_refused_with_the_holder_named(lean_study, tmp_path, monkeypatch, capsys):
    config, run_dir = lean_study
    # A process whose command line names contrastlab (a lock without a start time: one written by hand)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "contrastlab"])
    try:
        (run_dir / rundir.LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                                             "time": time.time(), "start": "2026-12-01T00:00:00"}))
        code, _, err = run_cli(monkeypatch, capsys, *study_args(run_dir))
        assert_one_line_error(code, err, f"in use by another contrastlab run \\(pid {holder.pid} on {os.uname().nodename}")
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale and taken over; everything is already done.
    summary = run_study(config, run_dir, build_report=False)
    assert not summary.ran and not (run_dir / rundir.LOCK_FILE).exists()


GATED = '''
"""``python -m contrastlab ARGS`` that, before unit GATE_UNIT (1 = the first it runs) starts, writes
GATE_FILE.waiting and waits until GATE_FILE exists: a study caught at a known point, lock held."""
import os, runpy, sys, time
from pathlib import Path
import contrastlab.study.units as units

gate_unit, gate, started = int(os.environ["GATE_UNIT"]), Path(os.environ["GATE_FILE"]), [0]
real_run_stage = units.run_stage

def run_stage(ctx):
    started[0] += 1
    if started[0] == gate_unit:
        Path(f"{gate}.waiting").write_text(ctx.unit.id)
        while not gate.exists():
            time.sleep(0.02)
    return real_run_stage(ctx)

units.run_stage = run_stage
sys.argv = ["contrastlab", *sys.argv[1:]]
runpy.run_module("contrastlab", run_name="__main__", alter_sys=True)  # what ``-m contrastlab`` runs
'''


def gated_study(tmp_path: Path, out: Path, unit: int, *extra: str) -> tuple[subprocess.Popen, Path]:
    """``contrastlab study`` into ``out`` in a process of its own, held before its ``unit``-th unit
    until the returned gate file exists; returns once it waits there."""
    script, gate = tmp_path / "gated.py", tmp_path / "gate"
    script.write_text(GATED)
    env = {**os.environ, "GATE_UNIT": str(unit), "GATE_FILE": str(gate)}
    process = subprocess.Popen([sys.executable, str(script), *study_args(out, *extra)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not Path(f"{gate}.waiting").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if process.poll() is not None or not Path(f"{gate}.waiting").exists():
        process.kill()
        raise AssertionError(f"the study never reached unit {unit}: {process.communicate()[1][-3000:]}")
    return process, gate


# Enough for the lock tests: one method, one task.
ONE = ["methods=[supce]", "data.tasks=[[0,1,2]]"]


def test_two_concurrent_studies_one_waits_out(tmp_path, monkeypatch, capsys):
    """Two processes on one --out (another one and this one): the holder runs, the other exits at once naming it."""
    out = tmp_path / "run"
    first, gate = gated_study(tmp_path, out, 1, *ONE)  # holds the lock, in its first unit
    try:
        code, _, err = run_cli(monkeypatch, capsys, *study_args(out, *ONE))
    finally:
        gate.write_text("")  # let it go on, whatever happened here
    assert_one_line_error(code, err, f"in use by another contrastlab run \\(pid {first.pid} ")
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert json.loads((out / "study.json").read_text())["history"][-1]["status"] == "finished"


def test_ctrl_c_prints_one_line_and_keeps_finished_units(tmp_path):
    out = tmp_path / "run"
    process, _ = gated_study(tmp_path, out, 2)  # the first pretraining is done; never let through
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # the interrupt did not end it: do not leave it waiting at the gate
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert [line for line in err.splitlines() if line.strip()] == [
        "interrupted; finished units are kept, run the same command again to resume"]
    assert list(out.glob("pretrain/*/seed0/done.json"))
    history = json.loads((out / "study.json").read_text())["history"]
    assert history[-1]["status"] == "interrupted" and not (out / rundir.LOCK_FILE).exists()
    assert history[-1]["units_run"] == len(list(out.glob("**/done.json"))) >= 1


def test_storage_errors_are_one_line(monkeypatch, capsys, tmp_path):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    code, _, err = run_cli(monkeypatch, capsys, *study_args(tmp_path / "full"))
    assert_one_line_error(code, err, "no space left on device")
    assert not [p for p in (tmp_path / "full").rglob("*.tmp")]
    monkeypatch.undo()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(monkeypatch, capsys, *study_args(blocker / "run"))
    assert_one_line_error(code, err, str(blocker))


def test_corrupt_study_json_is_one_line_with_the_way_out(lean_study, tmp_path, monkeypatch, capsys):
    _, run_dir = lean_study
    run_dir = copy_of(run_dir, tmp_path)
    (run_dir / "study.json").write_text("{ broken")
    code, _, err = run_cli(monkeypatch, capsys, *study_args(run_dir))
    assert_one_line_error(code, err, "corrupt .*study.json.*--force")
    code, _, err = run_cli(monkeypatch, capsys, *study_args(run_dir, ), "--force")
    assert code == 0, err
    assert json.loads((run_dir / "study.json").read_text())["config_hash"]


def test_corrupt_manifest_and_missing_output_are_recomputed(lean_study, tmp_path, caplog):
    config, run_dir = lean_study
    run_dir = copy_of(run_dir, tmp_path)
    units = {u.id: u for u in plan_units(config)}
    probe = units["finetune/simclr/seed0/task-0-1-2"]
    other = units["finetune/supce/seed0/task-3-4-5"]
    (probe.folder(run_dir) / "snapshots.npy").unlink()
    (other.folder(run_dir) / "done.json").write_text("[]")
    with pytest.raises(CorruptFileError):
        rundir.read_manifest(other.folder(run_dir))
    assert not is_done(probe, run_dir) and not is_done(other, run_dir)
    summary = run_study(config, run_dir, build_report=False)
    assert set(summary.ran) >= {probe.id, other.id}
    assert (probe.folder(run_dir) / "snapshots.npy").exists() and is_done(probe, run_dir) and is_done(other, run_dir)
    assert "snapshots.npy is missing" in caplog.text


def test_precision_change_is_refused(lean_study, monkeypatch, capsys):
    _, run_dir = lean_study
    code, _, err = run_cli(monkeypatch, capsys, *study_args(run_dir, "precision=bf16"))
    assert_one_line_error(code, err, "holds a study with another config")


def test_history_keeps_every_run(lean_study):
    config, run_dir = lean_study
    run_study(config, run_dir, build_report=False)
    history = json.loads((run_dir / "study.json").read_text())["history"]
    assert len(history) >= 2 and all(h["status"] == "finished" and h["end"] and h["device"] == "cpu" for h in history)


def test_outputs_respect_the_umask(lean_study):
    _, run_dir = lean_study
    modes = {p.stat().st_mode & 0o777 for p in run_dir.rglob("*") if p.is_file() and p.name != rundir.LOCK_FILE}
    assert modes == {0o644}, modes  # the suite runs under umask 022


def test_every_manifest_says_device_and_precision(lean_study):
    _, run_dir = lean_study
    units = rundir.finished_units(run_dir)
    assert units and all(u.manifest["device"] == "cpu" and u.manifest["precision"] == "fp32" for u in units)
    assert all(u.manifest["files"] for u in units)


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp_path.joinpath(rundir.LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "time": time.time()}))
    with rundir.RunLock(tmp_path):
        with pytest.raises(RunDirectoryError, match="in use by another contrastlab run"):
            rundir.RunLock(tmp_path).acquire() if False else _second_lock_in_child(tmp_path)
    assert not tmp_path.joinpath(rundir.LOCK_FILE).exists()


def _second_lock_in_child(folder: Path) -> None:
    """Take the lock from another process (the same process would be its own holder)."""
    result = subprocess.run([sys.executable, "-c", f"from contrastlab.rundir import RunLock; RunLock({str(folder)!r}).acquire()"],
                            capture_output=True, text=True)
    if result.returncode != 0 and "in use by another contrastlab run" in result.stderr:
        raise RunDirectoryError("in use by another contrastlab run")
    raise AssertionError(result.stderr or "the second lock was granted")


def test_a_copied_run_directory_is_still_finished(lean_study, tmp_path):
    """cp -r does not keep mtimes: content (sha256) decides, not the time stamp."""
    import shutil

    config, run_dir = lean_study
    copy = tmp_path / "copied"
    shutil.copytree(run_dir, copy, copy_function=shutil.copyfile)  # new mtimes, same bytes
    assert all(is_done(u, copy) for u in plan_units(config))
    probe = copy / "finetune/simclr/seed0/task-0-1-2/result.json"
    probe.write_text(probe.read_text().replace('"val_accuracy": ', '"val_accuracy": 0.0, "was": '))
    assert not is_done(next(u for u in plan_units(config) if u.id == "finetune/simclr/seed0/task-0-1-2"), copy)


def test_force_into_another_config_keeps_old_units_on_disk_but_out_of_the_report(lean_study, tmp_path):
    import csv

    config, run_dir = lean_study
    run_dir = copy_of(run_dir, tmp_path)
    other = micro_config(*LEAN, "data.tasks=[[0,1,2]]")
    run_study(other, run_dir, force=True)
    assert (run_dir / "finetune/simclr/seed0/task-3-4-5/done.json").exists()  # nothing finished is deleted
    with open(run_dir / "report/tables/accuracy.csv", newline="") as f:
        assert {row["task"] for row in csv.DictReader(f)} == {"task-0-1-2"}


# ---- issue 32: the eleven faults of "Why", each reproduced ---------------------------------------------------
# Faults 7 (tracebacks from `analyze all --encoder`) and 8 (`finetune --checkpoint random.pt`) are tested by the
# helper who fixed them, in tests/test_foreign.py (the other branch of issue 32).

def _group_processes(pgid: int) -> list[str]:
    """Live (not zombie) processes of process group ``pgid``: "pid command" each."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(f"{stat.parent.name} {cmdline[:120]}")
    return found


# Pretraining long enough (at micro sizes) to be caught mid-unit; local launcher with two workers.
KILLED = ["methods=[supce]", "data.tasks=[[0,1,2]]", "launcher.kind=local", "launcher.jobs=2", "pretrain.epochs=400",
          "pretrain.checkpoint_every=50", "data.pretrain_per_class=32"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_study_leaves_no_process_and_the_rerun_finishes(signum, tmp_path, monkeypatch, capsys):
    """Fault 1 (and 2 for SIGTERM): kill the study mid-unit; its fork server, resource tracker and workers
    are gone within 5 s, nothing is finished without the lock, and the rerun completes the study."""
    out = tmp_path / "run"
    study = subprocess.Popen([sys.executable, "-m", "contrastlab", *study_args(out, *KILLED)], start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list(out.glob("pretrain/supce/seed0/checkpoints/*.safetensors")) and time.time() < deadline:
            assert study.poll() is None, study.communicate()[1]
            time.sleep(0.05)
        assert len(_group_processes(study.pid)) >= 3  # the study, its fork server and its workers
        study.send_signal(signum)
        study.wait(timeout=30)
        deadline = time.time() + 5
        while _group_processes(study.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not _group_processes(study.pid), _group_processes(study.pid)
        _, err = study.communicate(timeout=5)  # nothing holds its pipes any more
    finally:
        if study.poll() is None:
            os.killpg(study.pid, signal.SIGKILL)
            study.wait()
    assert not (out / "pretrain/supce/seed0/done.json").exists()
    history = json.loads((out / "study.json").read_text())["history"]
    if signum == signal.SIGTERM:  # fault 2: handled as Ctrl-C
        assert study.returncode == 143
        assert [line for line in err.splitlines() if line.strip()] == [
            "terminated (SIGTERM); finished units are kept, run the same command again to resume"]
        assert history[-1]["status"] == "terminated" and history[-1]["end"] and not (out / rundir.LOCK_FILE).exists()
    else:
        assert study.returncode == -signal.SIGKILL and history[-1]["end"] is None
    code, _, err = run_cli(monkeypatch, capsys, *study_args(out, *KILLED[:2], "pretrain.epochs=400",
                                                             "pretrain.checkpoint_every=50", "data.pretrain_per_class=32"))
    assert code == 0, err
    config = micro_config(*LEAN, *KILLED)
    assert all(is_done(u, out) for u in plan_units(config))
    assert json.loads((out / "study.json").read_text())["history"][-1]["status"] == "finished"


def test_a_unit_finishes_only_under_the_lock(tmp_path, monkeypatch):
    """Fault 1: a worker whose study has died (the lock names another process) writes no done.json."""
    from contrastlab.study.units import UnitError, run_unit

    config = micro_config(*LEAN, *ONE)
    unit = plan_units(config)[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with rundir.RunLock(tmp_path):
        monkeypatch.setenv(rundir.LOCK_OWNER_ENV, str(dead.pid))  # a worker of the study `dead` was
        with pytest.raises(UnitError, match="no longer holds .*not marked finished"):
            run_unit(unit, config, tmp_path)
        assert not (unit.folder(tmp_path) / "done.json").exists()
        monkeypatch.setenv(rundir.LOCK_OWNER_ENV, str(os.getpid()))  # the study that holds it: finishes
        run_unit(unit, config, tmp_path)
        assert is_done(unit, tmp_path)


def test_a_failing_unit_is_one_line_with_its_error_log(tmp_path):
    """Fault 3: a failure in a local worker (NaN loss) is one line naming the unit, the cause and error.log."""
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "contrastlab", *study_args(out, *ONE, "launcher.kind=local", "launcher.jobs=2",
                                                                              "pretrain.lr.supce=1e30", "methods=[supce]")],
                            capture_output=True, text=True, timeout=300)
    log_path = out / "pretrain/supce/seed0/error.log"
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: unit pretrain/supce/seed0 failed: ") and "loss is nan" in lines[0]
    assert f"traceback in {log_path}" in lines[0]
    assert "Traceback" in log_path.read_text() and "NonFiniteError" in log_path.read_text()
    assert json.loads((out / "study.json").read_text())["history"][-1]["status"] == "failed"


@pytest.mark.parametrize("error, setting", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 943718400 bytes."), "pretrain.batch_size"),
    (MemoryError(), "pretrain.batch_size"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "pretrain.batch_size"),
])
def test_out_of_memory_is_named_with_the_setting_to_lower(error, setting, tmp_path, monkeypatch, capsys):
    """Fault 3: out of memory says so, and which setting to lower; the traceback goes to error.log only."""
    from contrastlab.study import stages

    def out_of_memory(ctx):
        raise error

    monkeypatch.setitem(stages.STAGES, "pretrain", out_of_memory)
    code, _, err = run_cli(monkeypatch, capsys, *study_args(tmp_path / "run", *ONE))
    assert_one_line_error(code, err, f"unit pretrain/supce/seed0 failed: out of memory .*lower {setting}.*traceback in "
                                     f"{tmp_path / 'run/pretrain/supce/seed0/error.log'}")


def test_a_report_that_fails_makes_the_run_failed(shared_micro_study, tmp_path, monkeypatch):
    """Fault 3: disk full in the report stage: the history says failed, not finished."""
    from contrastlab.report import build
    from helpers import copy_of_shared_study

    run_dir = copy_of_shared_study(shared_micro_study, tmp_path / "run").run_dir

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(build, "write_text", disk_full)
    with pytest.raises(OSError):
        run_study(micro_config(), run_dir)
    history = json.loads((run_dir / "study.json").read_text())["history"]
    assert history[-1]["status"] == "failed" and history[-1]["end"]
    assert not (run_dir / rundir.LOCK_FILE).exists()


@pytest.mark.parametrize("content", ['{"pid": "abc", "host": "h"}', '{"pid": null, "host": "h"}', "", "not json", "[]",
                                     '{"pid": 12, "host": null}', '{"pid": true, "host": "h"}'])
def test_a_malformed_lock_is_one_line_saying_how_to_remove_it(content, tmp_path, monkeypatch, capsys):
    """Fault 4: no ValueError/TypeError traceback, no "None" in the message."""
    out = tmp_path / "run"
    out.mkdir()
    (out / rundir.LOCK_FILE).write_text(content)
    code, _, err = run_cli(monkeypatch, capsys, *study_args(out, *ONE))
    assert_one_line_error(code, err, f"malformed lock {out / rundir.LOCK_FILE}.*delete {out / rundir.LOCK_FILE}")
    assert "None" not in err


def test_a_lock_of_a_live_process_that_is_not_contrastlab_is_stale(tmp_path):
    """Fault 4: a live `sleep` named by a lock is not "another contrastlab run"; a reused pid neither."""
    sleeper = subprocess.Popen(["sleep", "60"])
    deadline = time.time() + 10
    while not Path(f"/proc/{sleeper.pid}/cmdline").read_bytes().startswith(b"sleep") and time.time() < deadline:
        time.sleep(0.01)  # until it has exec'd: before, /proc shows this test's command line
    try:
        for extra in ({}, {"proc_start": 1}):  # no start time: its command line decides; another start: not that run
            (tmp_path / rundir.LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename,
                                                                 "time": time.time(), **extra}))
            with rundir.RunLock(tmp_path):
                holder = json.loads((tmp_path / rundir.LOCK_FILE).read_text())
                assert holder["pid"] == os.getpid() and holder["proc_start"] == rundir.process_start(os.getpid())
    finally:
        sleeper.kill()
        sleeper.wait()
    # a process whose command line names contrastlab is one (under xdist this test's own worker names neither it nor pytest)
    runner = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); time.sleep(60)", "-m", "contrastlab"],
                              stdout=subprocess.PIPE)
    try:
        runner.stdout.readline()  # it runs its own command line now (before exec, /proc shows this test's)
        assert rundir.is_contrastlab_process(runner.pid)
    finally:
        runner.kill()
        runner.wait()


def _edit_keeping_size_and_mtime(path: Path, edit) -> None:
    """Change ``path``'s bytes, keeping its size, then restore its mtime (``touch -r``)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    edit(data)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def _edit_one_digit(data: bytearray) -> None:
    text = data.decode()
    at = text.index('"top_eigenvalues"')
    digit = next(i for i in range(at, len(text)) if text[i].isdigit() and text[i] != "0")
    data[digit] = ord("1") if text[digit] != "1" else ord("2")


def test_edited_outputs_are_recomputed_and_refused_by_the_report(shared_micro_study, tmp_path, monkeypatch, capsys, caplog):
    """Fault 5: an edit that keeps size and mtime is noticed by the rerun (sha256) and by the report."""
    from helpers import copy_of_shared_study

    run_dir = copy_of_shared_study(shared_micro_study, tmp_path / "run").run_dir
    units = {u.id: u for u in plan_units(micro_config())}
    sharpness = units["analysis/sharpness/simclr/seed0/task-0-1-2"]
    pretrain = units["pretrain/supce/seed0"]
    _edit_keeping_size_and_mtime(sharpness.folder(run_dir) / "sharpness.json", _edit_one_digit)
    _edit_keeping_size_and_mtime(pretrain.folder(run_dir) / "encoder.safetensors", lambda d: d.__setitem__(-1, d[-1] ^ 1))
    assert not is_done(sharpness, run_dir) and not is_done(pretrain, run_dir)
    problems, _ = rundir.verify_run(run_dir)
    assert {p for _, p in problems} == {"sharpness.json changed", "encoder.safetensors changed"}
    code, _, err = run_cli(monkeypatch, capsys, "report", run_dir)
    assert_one_line_error(code, err, "(sharpness/simclr/seed0/task-0-1-2/sharpness.json|pretrain/supce/seed0/encoder.safetensors) "
                                     "changed since its unit finished \\(2 units in all\\).*--allow-changed")
    code, out, err = run_cli(monkeypatch, capsys, "report", run_dir, "--allow-changed")
    warned = err + caplog.text  # the warnings (log records: pytest captures them)
    assert code == 0 and "sharpness/simclr/seed0/task-0-1-2 left out: sharpness.json changed" in warned
    assert "pretrain/supce/seed0 left out: encoder.safetensors changed" in warned
    code, out, err = run_cli(monkeypatch, capsys, "verify", run_dir)
    assert code == 1 and "analysis/sharpness/simclr/seed0/task-0-1-2: sharpness.json changed" in err


def test_a_missing_output_is_a_warning_in_the_report(shared_micro_study, tmp_path, monkeypatch, capsys, caplog):
    """Fault 5: a deleted fgsm.csv is named, not silently dropped."""
    from helpers import copy_of_shared_study

    run_dir = copy_of_shared_study(shared_micro_study, tmp_path / "run").run_dir
    (run_dir / "analysis/robustness/simclr/seed0/task-0-1-2/fgsm.csv").unlink()
    code, _, err = run_cli(monkeypatch, capsys, "report", run_dir)
    assert code == 0
    assert "analysis/robustness/simclr/seed0/task-0-1-2 left out: fgsm.csv is missing" in err + caplog.text
    assert "fgsm.csv is missing" in (run_dir / "report/report.html").read_text()


def test_every_unit_depends_on_the_units_it_reads():
    """Fault 6: an analysis waits for the pretraining whose encoder it loads; the trajectory for the random encoder."""
    units = plan_units(micro_config())
    ids = {u.id: i for i, u in enumerate(units)}
    for unit in units:
        for _, path in unit.inputs:
            owner = next(u for u in sorted(ids, key=len, reverse=True) if path.startswith(u + "/"))
            assert owner in unit.deps, (unit.id, path)
        assert all(ids[d] < ids[unit.id] for d in unit.deps)
    landscape = next(u for u in units if u.id == "analysis/landscape/simclr/seed0/task-0-1-2")
    assert landscape.deps == ("pretrain/simclr/seed0", "finetune/simclr/seed0/task-0-1-2")


def test_a_deleted_encoder_reruns_its_consumers_with_the_same_tables(shared_micro_study, tmp_path, monkeypatch, capsys):
    """Fault 6: delete an encoder of a finished run, rerun once: exit 0, the same tables; its consumers ran after it."""
    from helpers import copy_of_shared_study

    run_dir = copy_of_shared_study(shared_micro_study, tmp_path / "run").run_dir
    results = lambda: {p.name: p.read_text() for p in (run_dir / "report/tables").glob("*.csv")  # noqa: E731
                       if p.name != "stage_times.csv"}  # every table but the one of seconds taken
    tables = results()
    (run_dir / "pretrain/simclr/seed0/encoder.safetensors").unlink()
    summary = run_study(micro_config(), run_dir)
    consumers = [u.id for u in plan_units(micro_config()) if "pretrain/simclr/seed0" in u.deps]
    assert summary.ran[0] == "pretrain/simclr/seed0" and set(consumers) <= set(summary.ran)
    assert len(tables) > 10 and results() == tables


def test_only_finished_units_are_said_to_be_recomputed(shared_micro_study, tmp_path, caplog):
    """A new unit downstream of one that runs (a new seed's) is not "recomputed"; a finished one is."""
    import logging

    from helpers import copy_of_shared_study
    from contrastlab.study.runner import pending_units

    with caplog.at_level(logging.INFO, logger="contrastlab.study.runner"):
        todo, done = pending_units(micro_config(), tmp_path / "empty")
    assert done == [] and len(todo) == len(plan_units(micro_config()))
    assert not [r for r in caplog.records if "recomputing" in r.getMessage()]
    run_dir = copy_of_shared_study(shared_micro_study, tmp_path / "run").run_dir
    (run_dir / "pretrain/simclr/seed0/done.json").unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="contrastlab.study.runner"):
        todo, _ = pending_units(micro_config(), run_dir)
    said = {r.getMessage().split()[1].rstrip(":") for r in caplog.records if "recomputing" in r.getMessage()}
    assert said == {u.id for u in todo} - {"pretrain/simclr/seed0"} and said


def test_a_consumer_of_a_recomputed_producer_is_stale(shared_micro_study, tmp_path):
    """Fault 6: a finished unit whose producer has other bytes since (recomputed in an earlier cut run) runs again."""
    from helpers import copy_of_shared_study
    from contrastlab.utils.io import read_json, write_json

    run_dir = copy_of_shared_study(shared_micro_study, tmp_path / "run").run_dir
    units = {u.id: u for u in plan_units(micro_config())}
    probe = units["finetune/simclr/seed0/task-0-1-2"]
    assert is_done(probe, run_dir)
    assert read_json(probe.folder(run_dir) / "done.json")["input_sha256"] == {
        "pretrain/simclr/seed0/encoder.safetensors":
            read_json(run_dir / "pretrain/simclr/seed0/done.json")["files"]["encoder.safetensors"]["sha256"]}
    producer = read_json(run_dir / "pretrain/simclr/seed0/done.json")
    producer["files"]["encoder.safetensors"]["sha256"] = "0" * 64  # as if recomputed with other bytes
    write_json(run_dir / "pretrain/simclr/seed0/done.json", producer)
    assert not is_done(probe, run_dir)


def test_a_duplicate_yaml_key_is_one_line_with_both_lines(tmp_path, monkeypatch, capsys):
    """Fault 9: a second `pretrain:` block no longer replaces the first silently."""
    preset = tmp_path / "mine.yaml"
    preset.write_text("name: mine\npretrain:\n  lr: {simclr: 0.5}\n  temperature: {simclr: 0.3}\nseeds: [0]\npretrain:\n  epochs: 3\n")
    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "study", "--preset", str(preset), "--out", out, "--no-progress")
    assert_one_line_error(code, err, f"duplicate key 'pretrain' at lines 2 and 6 of {preset}")
    assert not out.exists()


def test_too_many_tasks_or_units_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """Fault 10: random:100000 is refused at once; a study of more than 10,000 units asks for --yes."""
    out = tmp_path / "run"
    started = time.perf_counter()
    code, _, err = run_cli(monkeypatch, capsys, *study_args(out, "data.tasks=random:100000"))
    assert_one_line_error(code, err, "'random:100000': at most 10,000 tasks")
    code, _, err = run_cli(monkeypatch, capsys, *study_args(out, "data.tasks=random:2000", "data.task_ways=3"))
    assert_one_line_error(code, err, "this study has [0-9,]+ units \\(more than 10,000.*pass --yes")
    assert time.perf_counter() - started < 30 and not out.exists()
    code, _, err = run_cli(monkeypatch, capsys, *study_args(out, "data.tasks=random:200000", "data.task_ways=2"))
    assert_one_line_error(code, err, "only 4950 distinct 2-way tasks")


def test_the_plan_size_is_printed_first(lean_study, monkeypatch, capsys):
    config, run_dir = lean_study
    code, out, err = run_cli(monkeypatch, capsys, *study_args(run_dir))
    assert code == 0, err
    assert out.splitlines()[0] == f"study: {len(plan_units(config))} units (pretraining, probes, analyses) into {run_dir}"


def test_force_never_overwrites_a_file_the_study_did_not_write(tmp_path, monkeypatch, capsys):
    """Fault 11: --force into a folder holding the user's own config.yaml refuses, and the file is intact."""
    mine = tmp_path / "config.yaml"
    mine.write_text("my own settings\n")
    code, _, err = run_cli(monkeypatch, capsys, *study_args(tmp_path, *ONE), "--force")
    assert_one_line_error(code, err, f"{mine} was not written by a contrastlab study and --force would overwrite it")
    assert mine.read_text() == "my own settings\n" and not (tmp_path / "study.json").exists()
