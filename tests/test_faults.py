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
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
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
