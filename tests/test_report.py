"""The report reads a run directory only through its manifests: hand-made run directories with known
numbers, a run directory of an older version, a single finetune folder, and many tasks."""

import base64
import csv
import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from contrastlab import rundir
from contrastlab.config import PAPER_TASKS
from contrastlab.errors import RunDirectoryError
from contrastlab.report.build import build_report
from contrastlab.report.claims import VERDICTS
from contrastlab.utils.io import write_csv, write_json

LEGACY = Path(__file__).parent / "data" / "legacy_run_76c4585"
REPORT = Path(__file__).parents[1] / "src" / "contrastlab" / "report"
METHODS = ("simclr", "supcon", "supce", "random")
EPS_255 = [0, 2, 4, 6, 8]


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def accuracy_of(method: str, task: int, seed: int) -> float:
    """Known numbers: methods apart by 5 points, tasks by 1, seeds by a little noise."""
    m = METHODS.index(method)
    return 0.5 + 0.05 * m + 0.01 * (task % 10) + 0.003 * ((seed * 7 + task * 3 + m * 2) % 5)


def _unit(run_dir: Path, kind: str, method, seed, classes, files: dict, device="cuda:0", precision="fp32", settings=None):
    folder = run_dir / rundir.unit_id(kind, method, seed, classes)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if name.endswith(".csv"):
            write_csv(folder / name, content)
        else:
            write_json(folder / name, content)
    rundir.write_manifest(folder, {
        "kind": kind, "unit": rundir.unit_id(kind, method, seed, classes), "key": "k", "method": method, "seed": seed,
        "task": rundir.task_name(classes) if classes else None, "task_classes": classes, "device": device,
        "device_name": "NVIDIA H200" if device.startswith("cuda") else "cpu", "precision": precision,
        "seconds": 2.0, "settings": settings or {}})


def make_run(run_dir: Path, tasks, methods=METHODS, seeds=(0, 1, 2), config_extra=None, epochs=4) -> Path:
    """A run directory written by hand: probes, sharpness, robustness and progress with known numbers."""
    config = {"name": "handmade", "methods": [m for m in methods if m != "random"], "seeds": list(seeds),
              "data": {"tasks": [list(t) for t in tasks], "downstream": "synth100"}, **(config_extra or {})}
    index = rundir.start_run(run_dir, "abc123", "handmade", config, {"device": "cuda", "device_name": "NVIDIA H200",
                                                                    "contrastlab": "0.2.0", "torch": "2.5"})
    rundir.end_run(run_dir, index, "finished", 7)
    for t, classes in enumerate(tasks):
        progress = []
        for method in methods:
            m = METHODS.index(method)
            for seed in seeds:
                acc = accuracy_of(method, t, seed)
                _unit(run_dir, "finetune", method, seed, classes,
                      {"result.json": {"val_accuracy": acc, "knn_accuracy": acc - 0.1, "task_classes": classes,
                                       "method": method, "pretrain_seed": seed, "mode": "linear", "epochs": epochs}},
                      settings={"mode": "linear", "epochs": epochs})
                # Equal sharpness up to 5 %: "similarly flat"; raw Hessian 10x larger.
                top = 10.0 * (1 + 0.05 * ((seed + t + m) % 3) / 2)
                _unit(run_dir, "sharpness", method, seed, classes, {"sharpness.json": {
                    "top_eigenvalues": [10 * top], "trace": 100 * top, "trace_std_error": 1.0,
                    "normalized": {"top_eigenvalues": [top], "trace": 10 * top, "trace_std_error": 0.1}}},
                      settings={"samples": 64, "params": "all"})
                # SimCLR loses accuracy slowest under attack.
                slope = {"simclr": 0.02, "supcon": 0.06, "supce": 0.05, "random": 0.08}[method] * (1 + 0.02 * seed)
                curve = [{"eps": e / 255, "eps_255": e, "accuracy": max(acc - slope * e, 0.01), "loss": 1 + 0.1 * e} for e in EPS_255]
                _unit(run_dir, "robustness", method, seed, classes,
                      {"fgsm.csv": curve, "pgd.csv": curve, "robustness.json": {"space": "pixel", "samples": 64}},
                      settings={"space": "pixel", "samples": 64, "pgd_steps": 10})
                final = 0.6 + 0.1 * (m == 0) - 0.05 * (m == 1) + 0.01 * seed + 0.01 * t
                for epoch in range(epochs + 1):
                    progress.append({"method": method, "seed": seed, "epoch": epoch, "t_w": final * epoch / epochs,
                                     "t_w_raw": 0.9 * final * epoch / epochs})
        _unit(run_dir, "geometry", None, None, classes, {"progress.csv": progress}, device="cpu")
    return run_dir


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("run"), tasks=[[0, 1], [2, 3], [4, 5]])
    build_report(run_dir, workers=2)  # figures rendered by worker processes
    return run_dir


def test_report_imports_neither_the_study_nor_training():
    for path in REPORT.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"(from|import)\s+(contrastlab|\.\.)\.?(study|train)\b", text), path


def test_accuracy_table_carries_the_pooled_logit_interval_of_its_values(handmade):
    rows = rows_of(handmade / "report/tables/accuracy.csv")
    assert list(rows[0])[:4] == ["method", "task", "mean", "std"]
    assert len(rows) == 4 * 3 and [r["method"] for r in rows[::3]] == list(METHODS)  # random last
    # 3 seeds per cell: the seed-to-seed spread of the logits is pooled over the 12 cells (df = 12 · 2)
    logits = [np.log(v / (100 - v)) for v in (np.array(json.loads(r["values"])) for r in rows)]
    pooled_sd = np.sqrt(sum(((x - x.mean()) ** 2).sum() for x in logits) / (len(rows) * 2))
    for row in rows:
        values = np.array(json.loads(row["values"]))
        assert int(row["n"]) == len(values) == 3 and int(row["df"]) == 24 and row["interval"] == "pooled"
        centre, half = np.log(values.mean() / (100 - values.mean())), st.t.ppf(0.975, 24) * pooled_sd / np.sqrt(3)
        low, high = 100 / (1 + np.exp(-(centre - half))), 100 / (1 + np.exp(-(centre + half)))
        assert float(row["ci_low"]) == pytest.approx(low, abs=1e-5) and float(row["ci_high"]) == pytest.approx(high, abs=1e-5)
        assert 0 <= float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"]) <= 100
        assert float(row["mean"]) == pytest.approx(values.mean(), abs=1e-5)
        assert float(row["std"]) == pytest.approx(values.std(ddof=1), abs=1e-5)
    first = next(r for r in rows if r["method"] == "supce" and r["task"] == "task-2-3")
    assert json.loads(first["values"]) == pytest.approx([100 * accuracy_of("supce", 1, s) for s in (0, 1, 2)])
    for table in ("knn_accuracy", "progress_final", "progress_final_raw", "sharpness_top_eigenvalue",
                  "sharpness_top_eigenvalue_normalized", "sharpness_trace", "robustness_fgsm_score"):
        assert {"n", "mean", "std", "ci_low", "ci_high", "values"} <= set(rows_of(handmade / f"report/tables/{table}.csv")[0]), table


def test_comparisons_pair_seeds_within_a_task_and_tasks_over_tasks(handmade):
    rows = rows_of(handmade / "report/tables/comparisons.csv")
    probe = [r for r in rows if r["quantity"] == "probe_accuracy"]
    assert len(probe) == 6 * (3 + 1)  # 6 pairs of 4 methods, 3 tasks + pooled
    pooled = next(r for r in probe if r["scope"] == "pooled" and r["method_a"] == "simclr" and r["method_b"] == "supce")
    a = [np.mean([100 * accuracy_of("simclr", t, s) for s in range(3)]) for t in range(3)]
    b = [np.mean([100 * accuracy_of("supce", t, s) for s in range(3)]) for t in range(3)]
    d = np.subtract(a, b)
    assert int(pooled["n"]) == 3 and pooled["unit"] == "task"
    assert float(pooled["difference"]) == pytest.approx(d.mean(), abs=1e-5)
    per_task = next(r for r in probe if r["scope"] == "task-0-1" and r["method_a"] == "simclr" and r["method_b"] == "supcon")
    diffs = [100 * (accuracy_of("simclr", 0, s) - accuracy_of("supcon", 0, s)) for s in range(3)]
    expected = st.ttest_rel([100 * accuracy_of("simclr", 0, s) for s in range(3)], [100 * accuracy_of("supcon", 0, s) for s in range(3)])
    assert per_task["unit"] == "seed" and float(per_task["difference"]) == pytest.approx(np.mean(diffs), abs=1e-5)
    assert float(per_task["p_value"]) == pytest.approx(expected.pvalue, rel=1e-4)
    assert {r["quantity"] for r in rows} >= {"knn_accuracy", "t_w", "t_w_raw", "sharpness_top_normalized", "fgsm_score"}


def test_claims_table_has_verdicts_and_leads_the_report(handmade):
    rows = rows_of(handmade / "report/tables/claims.csv")
    assert {"claim", "statistic", "estimate", "ci_low", "ci_high", "verdict", "rule"} <= set(rows[0])
    assert len({r["claim"][0] for r in rows if not r["claim"].startswith("F")}) == 3
    assert all(r["verdict"] in VERDICTS for r in rows)
    verdict = {r["claim"]: r["verdict"] for r in rows}
    assert verdict["1"] == "supported"  # sharpness equal within 5 %, margin 2
    assert "filter-normalized" in rows[0]["text"]
    assert verdict["3a"] == "supported" and verdict["3b"] == "supported"  # SimCLR loses accuracy slowest
    html = (handmade / "report/report.html").read_text()
    sections = re.findall(r'<section id="(\w+)">', html)
    assert sections[:2] == ["claims", "accuracy"] and "comparisons" in sections and "provenance" in sections
    assert "supported" in (handmade / "report/tables/summary.md").read_text()


def test_html_shows_intervals_seeds_and_provenance(handmade):
    html = (handmade / "report/report.html").read_text()
    row = next(r for r in rows_of(handmade / "report/tables/accuracy.csv") if r["method"] == "simclr")
    assert f"{float(row['mean']):.2f} [{float(row['ci_low']):.2f}, {float(row['ci_high']):.2f}]" in html
    assert "over n = 3 seeds" in html and "all tasks" in html
    assert "(NVIDIA H200) ×" in html and "fp32 ×" in html and "finished" in html  # devices, precisions, run history
    times = rows_of(handmade / "report/tables/stage_times.csv")
    assert {r["stage"]: float(r["seconds"]) for r in times}["finetune"] == pytest.approx(2.0 * 4 * 3 * 3)
    assert html.count("<img alt=") == len(list((handmade / "report/figures").glob("*.png"))) >= 3


def test_every_figure_the_workers_wrote_is_inlined(handmade):
    html = (handmade / "report/report.html").read_text()
    inlined = sorted(base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html))
    written = sorted(p.read_bytes() for p in (handmade / "report/figures").glob("*.png"))
    assert inlined == written and len(written) >= 3
    assert not list((handmade / "report").rglob("*.tmp"))


def test_legacy_run_directory_renders_its_tables(tmp_path):
    run_dir = shutil.copytree(LEGACY, tmp_path / "legacy")
    build_report(run_dir)
    rows = rows_of(run_dir / "report/tables/accuracy.csv")
    assert [(r["method"], r["task"]) for r in rows] == [(m, t) for m in ("simclr", "supce", "random") for t in ("task-0-1-2", "task-3-4-5")]
    result = json.loads((LEGACY / "finetune/supce/seed0/task-3-4-5/result.json").read_text())
    assert json.loads(rows[3]["values"]) == pytest.approx([100 * result["val_accuracy"]])
    assert rows[3]["n"] == "1" and math.isnan(float(rows[3]["ci_low"]))  # one seed: no interval
    for table in ("knn_accuracy", "progress_final", "sharpness_top_eigenvalue", "robustness_fgsm", "claims", "comparisons"):
        assert (run_dir / f"report/tables/{table}.csv").stat().st_size > 0, table
    html = (run_dir / "report/report.html").read_text()
    assert "recorded before run history" in html and "(n=1)" in html


def test_a_single_finetune_folder_renders(tmp_path):
    out = tmp_path / "probe"
    out.mkdir()
    write_json(out / "result.json", {"val_accuracy": 0.8, "knn_accuracy": 0.7, "task_classes": [3, 4], "method": "simclr",
                                     "pretrain_seed": 0, "mode": "linear", "epochs": 2})
    rundir.write_manifest(out, {"kind": "finetune", "unit": "finetune", "key": "k", "seconds": 1.0})
    build_report(out)
    rows = rows_of(out / "report/tables/accuracy.csv")
    assert [(r["method"], r["task"], r["mean"]) for r in rows] == [("simclr", "task-3-4", "80.0")]
    html = (out / "report/report.html").read_text()
    assert "Transfer accuracy" in html and "No study.json" in html


def test_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(RunDirectoryError, match="holds no study"):
        build_report(tmp_path)


def test_paper_tasks_show_the_paper_numbers(tmp_path):
    run_dir = make_run(tmp_path, tasks=PAPER_TASKS, methods=("simclr", "supce"), seeds=(0, 1), epochs=2,
                       config_extra={"data": {"tasks": PAPER_TASKS, "downstream": "cifar100"}})
    build_report(run_dir)
    assert "(paper 79.95)" in (run_dir / "report/tables/accuracy.md").read_text()
    assert "(paper 0.72)" in (run_dir / "report/tables/progress_final_raw.md").read_text()


def test_fifty_tasks_render_fast_with_distributions(tmp_path):
    tasks = [[2 * t, 2 * t + 1] for t in range(50)]
    run_dir = make_run(tmp_path, tasks=tasks, methods=("simclr", "supce", "random"), seeds=(0, 1), epochs=2)
    started = time.perf_counter()
    build_report(run_dir)
    seconds = time.perf_counter() - started
    assert seconds < 30, seconds  # a few seconds on an idle machine
    figures = sorted(p.name for p in (run_dir / "report/figures").glob("*.png"))
    # One figure per kind, not per task (the correlations' figure pools every model).
    assert figures == ["correlations.png", "distributions.png", "progress.png", "robustness_fgsm.png", "robustness_pgd.png"]
    assert len(rows_of(run_dir / "report/tables/accuracy.csv")) == 3 * 50
    html = (run_dir / "report/report.html").read_text()
    assert 'id="distributions"' in html and "task-98-99" in html
