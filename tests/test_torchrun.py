"""Data-parallel pretraining under torchrun: 2 CPU processes, gloo backend.

The documented command line runs (``torchrun ... -m contrastlab pretrain``: a wrapper runs the
``contrastlab`` package as ``__main__`` exactly as ``-m`` does, with every checkpoint and metrics
write logged per rank); only rank 0 writes checkpoints and metrics; the sidecars record the
world size; a run cut mid-epoch resumes from its last checkpoint and ends with the same weights
as an uncut run. (BatchNorm statistics are per rank, so no comparison with a single process
here; the gathered loss and gradients are compared in test_distributed.py.) The study's
torchrun backend runs a plan of stand-in units in order on rank 0 while rank 1 waits, and
stops at a failing unit.

Each torchrun launch starts three processes that import torch, so the launches are few: the
uncut run and the run that crashes share one launch (one after the other in the same
processes, as two command lines), the resume is a second; the study backend's good plan and
its failing plan share a third.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from contrastlab.checkpoint import read_checkpoint
from contrastlab.rundir import latest_checkpoint

EPOCHS = 3
SETTINGS = [
    "data.pretrain_per_class=20", "data.image_size=8", "model.encoder=tiny_cnn", "model.width=4",
    "model.projection_dim=8", f"pretrain.epochs={EPOCHS}", "pretrain.batch_size=64", "pretrain.checkpoint_every=1",
    "device=cpu",
]  # 200 images: batches of 64, 64, 64, 8 -> 4 steps per epoch
STEPS_PER_EPOCH = 4

WRAPPER = '''
"""``python -m contrastlab -v pretrain ... --out OUT`` once per OUT given, one after the other in
this process, with every checkpoint / metrics write logged to WRITES_LOG.rank<R>; with
CRASH=OUT:n, a crash at the n-th training step of the run into OUT."""
import os, runpy, sys
import contrastlab.train.pretrain as pretrain

rank = os.environ["RANK"]
log = open(os.environ["WRITES_LOG"] + ".rank" + rank, "a")
real_save, real_metrics, real_views = pretrain.save_checkpoint, pretrain.write_csv, pretrain.make_views

def save_checkpoint(path, *args, **kwargs):
    log.write(f"checkpoint {path}\\n"); log.flush()
    return real_save(path, *args, **kwargs)

def write_metrics(path, rows, *args, **kwargs):
    log.write(f"metrics {path}\\n"); log.flush()
    return real_metrics(path, rows, *args, **kwargs)

crash_out, _, crash_step = os.environ.get("CRASH", "").rpartition(":")
steps, crash_at = [0], [0]
def make_views(*args, **kwargs):
    steps[0] += 1
    if steps[0] == crash_at[0]:
        raise RuntimeError("injected crash")
    return real_views(*args, **kwargs)

pretrain.save_checkpoint, pretrain.write_csv, pretrain.make_views = save_checkpoint, write_metrics, make_views
settings = sys.argv[1:sys.argv.index("--")]
for out in sys.argv[sys.argv.index("--") + 1:]:
    steps[0], crash_at[0] = 0, int(crash_step) if out == crash_out else 0
    sys.argv = ["contrastlab", "-v", "pretrain", *settings, "--out", out]
    try:
        runpy.run_module("contrastlab", run_name="__main__", alter_sys=True)  # what ``-m contrastlab`` runs
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
'''


def torchrun(script: Path, outs: list[Path], writes: Path, crash: str = "") -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=2 -m contrastlab -v pretrain ...``
    for each of ``outs`` in turn (through the wrapper ``script``)."""
    settings = ["--method", "simclr", "--preset", "quick", "--seed", "0", "--no-progress"]
    settings += [arg for item in SETTINGS for arg in ("--set", item)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               *settings, "--", *map(str, outs)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "WRITES_LOG": str(writes), "CRASH": crash}
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=300)


def metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def writes_into(log: Path, out: Path) -> list[str]:
    """The logged writes of one rank into ``out``: "checkpoint" or "metrics", in order."""
    if not log.exists():
        return []
    return [line.split()[0] for line in log.read_text().splitlines() if line.split(maxsplit=1)[1].startswith(f"{out}/")]


def test_torchrun_pretrain_writes_once_records_world_size_and_resumes(tmp_path):
    script = tmp_path / "wrapped_cli.py"
    script.write_text(WRAPPER)
    straight, cut, writes = tmp_path / "straight", tmp_path / "cut", tmp_path / "writes"

    # One launch: the uncut run, then the same run into another folder, crashed in epoch 2 (step 6 of 4 per epoch).
    first = torchrun(script, [straight, cut], writes, crash=f"{cut}:{STEPS_PER_EPOCH + 2}")
    assert first.returncode != 0 and "injected crash" in first.stderr
    assert first.stdout.count("encoder:") == 1  # the uncut run finished; rank 0 alone reports
    _, meta = read_checkpoint(straight / "encoder.safetensors")
    assert meta["settings"]["world_size"] == 2 and meta["epoch"] == EPOCHS
    assert [p.stem for p in sorted((straight / "checkpoints").glob("*.safetensors"))] == [f"epoch_{e:04d}" for e in range(EPOCHS + 1)]
    assert [int(r["epoch"]) for r in metrics(straight)] == list(range(1, EPOCHS + 1))
    assert all(float(r["loss"]) > 0 for r in metrics(straight))
    assert latest_checkpoint(cut).stem == "epoch_0001"
    assert [int(r["epoch"]) for r in metrics(cut)] == [1]

    # The cut run, run again: it resumes from its last checkpoint.
    resumed = torchrun(script, [cut], writes)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("encoder:") == 1
    assert "resuming simclr seed 0 from epoch 1" in resumed.stderr

    # Rank 0 wrote every checkpoint and metrics file; rank 1 wrote nothing.
    rank0, rank1 = tmp_path / "writes.rank0", tmp_path / "writes.rank1"
    assert not rank1.exists() or rank1.read_text() == ""
    for out in (straight, cut):  # the cut run over its two launches
        assert writes_into(rank0, out).count("checkpoint") == (EPOCHS + 1) + 1, out  # epochs 0..3, the encoder
        assert writes_into(rank0, out).count("metrics") == EPOCHS, out

    # Resuming changed nothing: same losses per epoch and the same final weights as the uncut run.
    assert [r["loss"] for r in metrics(cut)] == [r["loss"] for r in metrics(straight)]
    a, b = load_file(straight / "encoder.safetensors"), load_file(cut / "encoder.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


STUDY_SCRIPT = '''
"""run_units under torchrun on stand-in units (a, b; c after a; d after b and c), into each
run directory given in turn."""
import json, sys, time
from pathlib import Path
import torch.distributed as dist
import contrastlab.study.launchers as launchers
import contrastlab.study.launchers.torchrun as torchrun_backend
from contrastlab.config_checks import load_config
from contrastlab.rundir import write_manifest
from contrastlab.study.plan import Unit

dist.init_process_group("gloo")
torchrun_backend.DISTRIBUTED_POLL_S = 0.05  # read where ranks > 0 wait
rank = dist.get_rank()

def runner(unit, config, run_dir, progress=False):
    with open(run_dir / "runs.log", "a") as log:
        log.write(f"{unit.id} rank{rank}\\n")
    time.sleep(0.3)  # rank 1 must wait for it, not race past
    if (run_dir / f"fail-{unit.id}").exists():
        raise ValueError(f"injected failure in {unit.id}")
    unit.folder(run_dir).mkdir(parents=True, exist_ok=True)
    write_manifest(unit.folder(run_dir), {"unit": unit.id, "kind": unit.kind, "key": unit.key})
    return 0.3

spec = {"a": (), "b": (), "c": ("a",), "d": ("b", "c")}
units = [Unit("finetune", uid, "key-" + uid, deps=deps) for uid, deps in spec.items()]
for run_dir in map(Path, sys.argv[1:]):  # the last one has a failing unit: it ends the launch
    ran = launchers.run_units(units, load_config("quick", ["device=cpu"]), run_dir, runner=runner)
    (run_dir / f"ran.rank{rank}.json").write_text(json.dumps([ran, [u.id for u in units if (run_dir / u.id / "done.json").exists()]]))
dist.destroy_process_group()
'''


def test_torchrun_backend_runs_the_plan_in_order_on_rank_0_while_the_others_wait(tmp_path):
    script = tmp_path / "study.py"
    script.write_text(STUDY_SCRIPT)
    ok, failing = tmp_path / "ok", tmp_path / "failing"
    ok.mkdir()
    failing.mkdir()
    (failing / "fail-c").write_text("")
    # One launch: the plan into ``ok``, then into ``failing``, where unit c fails.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(ok), str(failing)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)

    assert (ok / "runs.log").read_text().splitlines() == ["a rank0", "b rank0", "c rank0", "d rank0"]
    for rank in (0, 1):  # every rank saw each unit done, in plan order, before going on
        ran, seen_done = json.loads((ok / f"ran.rank{rank}.json").read_text())
        assert ran == ["a", "b", "c", "d"] and seen_done == ran

    # A unit failing on rank 0 ends the whole run with its name; the units before it are kept.
    assert done.returncode != 0
    assert "unit c failed: ValueError: injected failure in c" in done.stderr
    assert (failing / "runs.log").read_text().splitlines() == ["a rank0", "b rank0", "c rank0"]
    assert (failing / "b" / "done.json").exists() and not (failing / "d").exists()
    assert not list(failing.glob("ran.rank*.json"))  # neither rank got past the failing plan
