"""Data-parallel pretraining under torchrun: 2 CPU processes, gloo backend.

The documented command line runs; only rank 0 writes checkpoints and metrics (every write
is logged per rank by a wrapper around the CLI); the sidecars record the world size; a run
cut mid-epoch resumes from its last checkpoint and ends with the same weights as an uncut
run. (BatchNorm statistics are per rank, so no comparison with a single process here; the
gathered loss and gradients are compared in test_distributed.py.) The study's torchrun backend
runs a plan of stand-in units in order on rank 0 while rank 1 waits, and stops at a failing unit.
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
from contrastlab.train.pretrain import latest_checkpoint

EPOCHS = 3
SETTINGS = [
    "data.pretrain_per_class=20", "data.image_size=8", "model.encoder=tiny_cnn", "model.width=4",
    "model.projection_dim=8", f"pretrain.epochs={EPOCHS}", "pretrain.batch_size=64", "pretrain.checkpoint_every=1",
    "device=cpu",
]  # 200 images: batches of 64, 64, 64, 8 -> 4 steps per epoch
STEPS_PER_EPOCH = 4

WRAPPER = '''
"""The contrastlab CLI with every checkpoint / metrics write logged to WRITES_LOG.rank<R>,
and, with CRASH_AT_STEP=n, a crash at the n-th training step of the run."""
import os, sys
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

steps = [0]
def make_views(*args, **kwargs):
    steps[0] += 1
    if steps[0] == int(os.environ.get("CRASH_AT_STEP", "0")):
        raise RuntimeError("injected crash")
    return real_views(*args, **kwargs)

pretrain.save_checkpoint, pretrain.write_csv, pretrain.make_views = save_checkpoint, write_metrics, make_views
from contrastlab.cli import main
sys.argv = ["contrastlab"] + sys.argv[1:]
main()
'''


def torchrun(target: list[str], out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=2 TARGET -v pretrain ...``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *target,
               "-v", "pretrain", "--method", "simclr", "--preset", "quick", "--seed", "0", "--out", str(out),
               "--no-progress"] + [arg for item in SETTINGS for arg in ("--set", item)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=300)


def metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_torchrun_pretrain_writes_once_records_world_size_and_resumes(tmp_path):
    # The documented command: torchrun --standalone --nproc_per_node=2 -m contrastlab pretrain ...
    straight = tmp_path / "straight"
    done = torchrun(["-m", "contrastlab"], straight)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("encoder:") == 1  # rank 0 alone reports
    _, meta = read_checkpoint(straight / "encoder.safetensors")
    assert meta["settings"]["world_size"] == 2 and meta["epoch"] == EPOCHS
    assert [p.stem for p in sorted((straight / "checkpoints").glob("*.safetensors"))] == [f"epoch_{e:04d}" for e in range(EPOCHS + 1)]
    assert [int(r["epoch"]) for r in metrics(straight)] == list(range(1, EPOCHS + 1))
    assert all(float(r["loss"]) > 0 for r in metrics(straight))

    # The same run, crashed in epoch 2 (step 6 of 4 per epoch), then run again.
    script = tmp_path / "wrapped_cli.py"
    script.write_text(WRAPPER)
    cut, writes = tmp_path / "cut", tmp_path / "writes"
    crashed = torchrun([str(script)], cut, {"WRITES_LOG": str(writes), "CRASH_AT_STEP": str(STEPS_PER_EPOCH + 2)})
    assert crashed.returncode != 0 and "injected crash" in crashed.stderr
    assert latest_checkpoint(cut).stem == "epoch_0001"
    assert [int(r["epoch"]) for r in metrics(cut)] == [1]

    resumed = torchrun([str(script)], cut, {"WRITES_LOG": str(writes)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming simclr seed 0 from epoch 1" in resumed.stderr

    # Rank 0 wrote every checkpoint and metrics file; rank 1 wrote nothing.
    rank0 = (tmp_path / "writes.rank0").read_text().splitlines()
    assert not (tmp_path / "writes.rank1").exists() or (tmp_path / "writes.rank1").read_text() == ""
    assert sum(line.startswith("checkpoint") for line in rank0) == (EPOCHS + 1) + 1  # epochs 0..3, the encoder
    assert sum(line.startswith("metrics") for line in rank0) == EPOCHS

    # Resuming changed nothing: same losses per epoch and the same final weights as the uncut run.
    assert [r["loss"] for r in metrics(cut)] == [r["loss"] for r in metrics(straight)]
    a, b = load_file(straight / "encoder.safetensors"), load_file(cut / "encoder.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


STUDY_SCRIPT = '''
"""run_units under torchrun on stand-in units: a, b; c after a; d after b and c."""
import json, sys, time
from pathlib import Path
import torch.distributed as dist
import contrastlab.study.launchers as launchers
import contrastlab.study.launchers.torchrun as torchrun_backend
from contrastlab.config import load_config
from contrastlab.rundir import write_manifest
from contrastlab.study.plan import Unit

dist.init_process_group("gloo")
torchrun_backend.DISTRIBUTED_POLL_S = 0.05  # read where ranks > 0 wait
run_dir = Path(sys.argv[1])
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
ran = launchers.run_units(units, load_config("quick", ["device=cpu"]), run_dir, runner=runner)
(run_dir / f"ran.rank{rank}.json").write_text(json.dumps([ran, [u.id for u in units if (run_dir / u.id / "done.json").exists()]]))
dist.destroy_process_group()
'''


def test_torchrun_backend_runs_the_plan_in_order_on_rank_0_while_the_others_wait(tmp_path):
    script = tmp_path / "study.py"
    script.write_text(STUDY_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok, failing = tmp_path / "ok", tmp_path / "failing"
    ok.mkdir()
    done = subprocess.run(command + [str(ok)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (ok / "runs.log").read_text().splitlines() == ["a rank0", "b rank0", "c rank0", "d rank0"]
    for rank in (0, 1):  # every rank saw each unit done, in plan order, before going on
        ran, seen_done = json.loads((ok / f"ran.rank{rank}.json").read_text())
        assert ran == ["a", "b", "c", "d"] and seen_done == ran

    # A unit failing on rank 0 ends the whole run with its name; the units before it are kept.
    failing.mkdir()
    (failing / "fail-c").write_text("")
    crashed = subprocess.run(command + [str(failing)], capture_output=True, text=True, env=env, timeout=120)
    assert crashed.returncode != 0
    assert "unit c failed: ValueError: injected failure in c" in crashed.stderr
    assert (failing / "runs.log").read_text().splitlines() == ["a rank0", "b rank0", "c rank0"]
    assert (failing / "b" / "done.json").exists() and not (failing / "d").exists()
