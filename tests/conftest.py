import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# One intra-op thread for the whole suite, in this process and (through OMP_NUM_THREADS) in
# every process a test starts. The tests run tiny tensors, where extra threads only add
# synchronization: on a 2-core machine, busy with other work or with a second pytest-xdist
# worker, every parallel op waits for a descheduled thread (measured: the micro study took
# 2.3 s with one thread and 15-20 s with two on a loaded machine). Tests that need more
# threads set them themselves (the local launcher's workers, Slurm jobs, explicit workers=).
THREADS = 1
os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)


# The heaviest modules, heaviest first (each 6-45 s on 2 cores; most others take a few seconds).
# `make test` runs pytest-xdist with --dist loadfile --no-loadscope-reorder: whole modules go to
# the workers in collection order, so a heavy module collected last would keep one worker busy
# long after the other ran out of work. Unlisted modules keep their order, after these.
HEAVY_FIRST = (
    "test_launchers", "test_study", "test_torchrun", "test_faults", "test_representation_stage", "test_report",
    "test_benchmarks", "test_many_tasks", "test_sharpness", "test_paper_preset", "test_faithful", "test_distributed",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: in-module order is kept


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add synchronization; on a busy 2-core machine every
    parallel op waits for a descheduled thread (measured: up to 100x slower).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``; the whole
    suite runs with one thread already (see above), so this only guards against a test that
    raised the count and left it raised."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def reports_render_in_process(monkeypatch):
    """A report's figures are rendered in this process unless a test asks for workers: starting
    figure workers (spawn) costs ~1-2 CPU-seconds, more than the suite's tiny reports take to draw.
    tests/test_figure_writer.py and the handmade report of test_report.py use workers."""
    from contrastlab.report import figure_writer

    monkeypatch.setattr(figure_writer, "default_workers", lambda: 1)


@pytest.fixture(scope="session")
def shared_micro_study(tmp_path_factory):
    """One micro study (helpers.MICRO_STUDY with its report, on helpers.SHARED_STUDY_THREADS torch
    threads) per test session instead of one per module: tests/test_study.py and
    tests/test_representation_stage.py run that very study. Under pytest-xdist the workers share it
    through the session's common temporary folder: the first to take the lock runs it, the others
    wait and reuse it.

    Returns the folder holding it (``run/`` and ``summary.json``), which is READ-ONLY: tests get their
    own copy, ``helpers.copy_of_shared_study(folder, dest)``, as several of them change their run
    directory (reruns, --force, deleted units, reports rebuilt)."""
    from filelock import FileLock

    from helpers import run_shared_micro_study

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # an xdist worker: its basetemp is the session's, per worker
        base = base.parent
    root = base / "shared-micro-study"
    with FileLock(str(root) + ".lock"):
        return run_shared_micro_study(root)
