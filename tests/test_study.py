"""End to end: a micro study, its artifacts and report; a SIGKILL mid-way and the resume; the report in a browser."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contrastlab.config_checks import load_config
from contrastlab.errors import RunDirectoryError
from contrastlab.report.build import summary_text
from contrastlab.study.plan import plan_units
from contrastlab.study.runner import run_study
from contrastlab.study.units import prepare_unit_folder
from helpers import MICRO_STUDY, copy_of_shared_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def micro_config():
    return load_config("quick", MICRO_STUDY)


@pytest.fixture(scope="module")
def finished_study(shared_micro_study, tmp_path_factory):
    """The session's micro study (tests/conftest.py: the same config, one torch thread), this module's own copy."""
    summary = copy_of_shared_study(shared_micro_study, tmp_path_factory.mktemp("study") / "run")
    return summary.run_dir, summary


def result_numbers(run_dir: Path) -> dict[str, object]:
    """Every number the study produced, by file (wall times and paths left out)."""
    numbers = {}
    for path in sorted(run_dir.rglob("*")):
        rel = str(path.relative_to(run_dir))
        if rel.startswith("report") or "checkpoints" in rel:
            continue
        if path.name == "result.json":
            data = json.loads(path.read_text())
            numbers[rel] = [data["val_accuracy"], data["knn_accuracy"], data["train_loss"]]
        elif path.name in ("progress.csv", "fgsm.csv", "pgd.csv", "history.csv"):
            numbers[rel] = path.read_text()
        elif path.name == "sharpness.json":
            data = json.loads(path.read_text())
            numbers[rel] = [data["top_eigenvalues"], data["trace"]]
        elif path.suffix == ".npy" and path.name != "partial.npy":
            numbers[rel] = np.load(path).round(5).tolist()
    return numbers


def test_micro_study_writes_every_artifact_and_the_report(finished_study, micro_config):
    run_dir, summary = finished_study
    units = plan_units(micro_config)
    # + 4 trajectories, 3 alignment units (one per encoder), 2 CKA units (tests/test_representation_stage.py)
    assert len(summary.ran) == len(units) == 3 + 6 + 12 + 2 + (4 + 3 + 2) and not summary.skipped
    for unit in units:
        done = json.loads((unit.folder(run_dir) / "done.json").read_text())
        assert done["key"] == unit.key and done["seconds"] >= 0
    assert (run_dir / "config.yaml").exists() and json.loads((run_dir / "study.json").read_text())["config_hash"]
    for method in ("simclr", "supce", "random"):
        sidecar = json.loads((run_dir / f"pretrain/{method}/seed0/encoder.json").read_text())
        assert sidecar["method"] == method and sidecar["architecture"]["encoder"] == "tiny_cnn"
        probe = run_dir / f"finetune/{method}/seed0/task-3-4-5"
        snapshots = np.load(probe / "snapshots.npy")
        assert snapshots.shape == (4, 24, 3) and json.loads((probe / "snapshots.json").read_text())["task_classes"] == [3, 4, 5]
    landscape = run_dir / "analysis/landscape/simclr/seed0/task-0-1-2"
    assert np.load(landscape / "surface.npy").shape == (2, 3, 3) and not (landscape / "partial.npy").exists()
    sharpness = json.loads((run_dir / "analysis/sharpness/supce/seed0/task-0-1-2/sharpness.json").read_text())
    assert sharpness["top_eigenvalues"][0] > 0 and sharpness["trace_estimator"] == "hutch++"
    # The filter-normalized trace reuses the raw trace's products: the file says so.
    assert "raw Hessian's products" in sharpness["normalized"]["trace_estimator"]
    fgsm = (run_dir / "analysis/robustness/supce/seed0/task-0-1-2/fgsm.csv").read_text().splitlines()
    assert fgsm[0] == "eps,eps_255,accuracy,loss" and len(fgsm) == 3
    progress = (run_dir / "analysis/geometry/task-0-1-2/progress.csv").read_text().splitlines()
    assert progress[0] == "method,seed,epoch,t_w,t_w_raw" and len(progress) == 1 + 3 * 4
    coords, meta = np.load(run_dir / "analysis/geometry/task-0-1-2/inpca.npy"), json.loads((run_dir / "analysis/geometry/task-0-1-2/inpca.json").read_text())
    # simclr and supce trajectories (4 snapshots each) and the truth; the random baseline is in progress.csv only
    assert coords.shape == (2 * 4 + 1, 3) and meta["points"][-1]["method"] == "truth"
    assert {p["method"] for p in meta["points"]} == {"simclr", "supce", "truth"}

    report = run_dir / "report"
    html = (report / "report.html").read_text()
    for title in ("Transfer accuracy", "Loss landscapes", "Sharpness", "InPCA", "Adversarial robustness", "Provenance", "What this run says"):
        assert title in html
    assert html.count("<img alt=") == len(list((report / "figures").glob("*.png"))) >= 12
    assert "src=\"http" not in html and "<script src=" not in html  # self-contained
    for table in ("accuracy.csv", "accuracy.md", "knn_accuracy.csv", "sharpness_top_eigenvalue.csv", "progress_final.csv",
                  "robustness_fgsm.csv", "robustness_pgd.csv", "stage_times.csv"):
        assert (report / "tables" / table).stat().st_size > 0
    rows = (report / "tables" / "accuracy.csv").read_text().splitlines()
    assert rows[0].startswith("method,task,mean,std") and len(rows) == 1 + 3 * 2


def test_rerun_skips_everything_and_report_rebuilds(finished_study, micro_config):
    run_dir, _ = finished_study
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("done.json")}
    summary = run_study(micro_config, run_dir)
    assert summary.ran == [] and len(summary.skipped) == len(before)
    assert before == {p: p.stat().st_mtime_ns for p in run_dir.rglob("done.json")}


def test_other_config_is_refused_and_force_recomputes_only_what_changed(finished_study, micro_config, tmp_path):
    run_dir, _ = finished_study
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    changed = load_config("quick", MICRO_STUDY + ["analysis.robustness.eps_255=[0,2]"])
    snapshot = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    with pytest.raises(RunDirectoryError, match="another config.*--force"):
        run_study(changed, copy)
    assert snapshot == {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}  # nothing touched
    summary = run_study(changed, copy, force=True, build_report=False)
    assert sorted(summary.ran) == sorted(u.id for u in plan_units(changed) if u.kind == "robustness")


def test_resumed_unit_keeps_its_partial_work_but_not_temporaries_of_killed_writes(micro_config, tmp_path):
    unit = next(u for u in plan_units(micro_config) if u.kind == "landscape")
    folder = prepare_unit_folder(unit, tmp_path)
    (folder / "partial.npy").write_bytes(b"resume me")
    orphan = folder / ".surface.npy.k1ll3d.tmp"  # what a SIGKILL inside atomic_path leaves behind
    orphan.write_bytes(b"half")
    prepare_unit_folder(unit, tmp_path)
    assert not orphan.exists()
    assert (folder / "partial.npy").read_bytes() == b"resume me"


KILLER = '''
"""``python -m contrastlab ARGS``, SIGKILLed by itself in unit KILL_IN_UNIT (1 = the first unit
it runs) right after that unit's first atomic write filled its temporary, before the rename."""
import os, runpy, signal, sys
from contextlib import contextmanager
import contrastlab.utils.io as io  # before any module imports atomic_path from it

kill_in, started = int(os.environ["KILL_IN_UNIT"]), [0]
real_atomic_path = io.atomic_path

@contextmanager
def atomic_path(path):
    with real_atomic_path(path) as tmp:
        yield tmp
        if started[0] == kill_in:
            os.kill(os.getpid(), signal.SIGKILL)

io.atomic_path = atomic_path
import contrastlab.study.units as units
real_run_stage = units.run_stage

def run_stage(ctx):
    started[0] += 1
    return real_run_stage(ctx)

units.run_stage = run_stage
sys.argv = ["contrastlab", *sys.argv[1:]]
runpy.run_module("contrastlab", run_name="__main__", alter_sys=True)  # what ``-m contrastlab`` runs
'''


def test_sigkill_mid_study_resumes_without_redoing_finished_units(finished_study, tmp_path):
    run_dir, _ = finished_study
    cut = tmp_path / "cut"
    args = ["study", "--preset", "quick", "--out", str(cut), "--no-progress", *[f"--set={item}" for item in MICRO_STUDY]]
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    # Killed in the middle of the 7th unit's first file: written to its temporary, not renamed yet.
    env = {**os.environ, "KILL_IN_UNIT": "7"}
    killed = subprocess.run([sys.executable, str(killer), *args], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    finished_before = {p: p.stat().st_mtime_ns for p in cut.rglob("done.json")}
    total = len(plan_units(load_config("quick", MICRO_STUDY)))
    assert len(finished_before) == 6 and total > 7
    assert [p for p in cut.rglob("*.tmp")]  # the write it was killed in
    assert not list(cut.rglob("report.html"))

    # The same study again, as the command runs it (in this process: what it resumes from is on disk;
    # without the report, which test_rerun_skips_everything_and_report_rebuilds rebuilds).
    summary = run_study(load_config("quick", MICRO_STUDY), cut, build_report=False)
    assert f"{total - len(finished_before)} units run, {len(finished_before)} already done" in summary_text(summary)
    assert finished_before == {p: p.stat().st_mtime_ns for p in finished_before}  # nothing finished was redone
    assert not [p for p in cut.rglob("*.tmp")]
    assert result_numbers(cut) == result_numbers(run_dir)  # identical to the uninterrupted run


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_opens_in_headless_chromium(finished_study):
    run_dir, _ = finished_study
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("Chromium is not installed (make test installs Debian's chromium where it can)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (a dev extra) is not installed")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((run_dir / "report" / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
        plots = page.eval_on_selector_all(".js-plotly-plot", "divs => divs.map(d => d.querySelectorAll('canvas, svg').length > 0)")
        browser.close()
    assert images and all(images), images
    assert len(plots) == 2 and all(plots)
    assert errors == []
