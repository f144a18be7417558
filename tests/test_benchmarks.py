"""The GPU benchmark's CPU smoke run: every part runs through the real code and writes every field."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = {"pretrain", "finetune", "landscape", "sharpness", "robustness", "geometry"}


@pytest.mark.slow
def test_gpu_benchmark_cpu_smoke_runs_every_part_and_keeps_each_parts_figures(tmp_path):
    """``--cpu-smoke`` runs the four parts, each in its own process, into one gpu.json (~15 s on 2 cores)."""
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--cpu-smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "gpu.json").read_text())
    markdown = (out / "gpu.md").read_text()
    assert results["mode"] == "cpu-smoke" and set(results) >= {"study", "throughput", "analyses", "projection", "targets"}
    for part in ("study", "throughput", "analyses", "projection"):  # each part's own command: it ran on its own
        assert f"--parts {part}" in results[part]["command"] and results[part].get("errors", {}) == {}

    study = results["study"]["study"]
    assert study["returncode"] == 0, study.get("error")
    assert "--preset paper" in study["command"] and set(study["stage_seconds"]) >= STAGES
    assert study["devices"] == {"cpu": study["units"]} and study["all_cuda"] is False

    pretrain = results["throughput"]["pretrain"]
    assert set(pretrain) == {"simclr", "supcon", "supce"}  # the paper preset's methods
    assert all(entry["best_images_per_s"] > 0 and entry["runs"][0]["mode"] == "eager" for entry in pretrain.values())
    assert results["throughput"]["inference"]["images_per_s"] > 0
    analyses = results["analyses"]
    assert analyses["landscape"]["seconds_at_51x51"] > 0 and analyses["hvp"]["seconds_per_product_at_512"] > 0
    assert analyses["attacks"]["fgsm"]["seconds_per_eps"] > 0 and analyses["attacks"]["pgd"]["seconds_per_eps"] > 0

    projection = results["projection"]["projection"]
    kinds = {"pretrain", "finetune", "landscape", "sharpness", "robustness", "geometry", "trajectory", "representation", "alignment"}
    assert projection["missing"] == {} and set(projection["kinds"]) == kinds  # every unit kind the paper preset plans
    assert sum(k["units"] for k in projection["kinds"].values()) == projection["units"]
    assert set(projection["kinds"]["pretrain"]["methods"]) == {"simclr", "supcon", "supce", "random"}
    assert projection["total_hours"] == pytest.approx(sum(k["hours"] for k in projection["kinds"].values()))
    assert all(k["formulas"] for k in projection["kinds"].values()) and "full paper grid" in markdown
    assert all(isinstance(t["met"], bool) for t in results["targets"].values())


def test_gpu_benchmark_labels_a_compile_fallback_eager(monkeypatch):
    """A run asked to compile whose compiler fell back (pretrain logs "training eagerly") is an eager row."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    gpu = __import__("gpu")
    import logging

    def fake_pretrain(data, folder, **kwargs):
        if kwargs["compile"]:
            logging.getLogger("contrastlab.train.pretrain").warning("torch.compile failed (%s); training eagerly", "no compiler")
        (Path(folder) / "metrics.csv").write_text("epoch,images_per_s\n1,10\n2,20\n3,30\n")

    monkeypatch.setattr(__import__("pretrain_call"), "pretrain", fake_pretrain)
    sizes = gpu.Sizes(**{**gpu.asdict(gpu.SMOKE), "compile_methods": ("simclr",)})
    out = gpu.bench_pretrain(sizes, __import__("torch").device("cpu"), ["simclr"], compile_too=True)
    eager, fallback = out["simclr"]["runs"]
    assert eager["mode"] == "eager" and "compile_fallback" not in eager
    assert fallback["mode"] == "eager" and "training eagerly" in fallback["compile_fallback"] and fallback["images_per_s"] == 25.0


def test_merged_results_keep_the_other_parts(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    common = __import__("common")
    path = tmp_path / "gpu.json"
    assert common.merge_results(path, {"study": {"a": 1}}) == {"study": {"a": 1}}
    path.write_text(json.dumps({"command": "old", "study": {"a": 1}, "analyses": {"b": 2}}))
    assert common.merge_results(path, {"analyses": {"c": 3}}) == {"study": {"a": 1}, "analyses": {"c": 3}}


def test_quick_study_transfer_intervals_pair_by_seed(monkeypatch):
    """The quick-study benchmark's seed-level interval averages each seed's tasks before the t-interval."""
    from scipy import stats

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    quick_study = __import__("quick_study")
    new = {(0, "a"): 10.0, (0, "b"): 14.0, (1, "a"): 3.0, (1, "b"): 5.0, (2, "a"): 8.0, (2, "b"): 6.0, (3, "a"): 1.0}
    ref = {(0, "a"): 9.0, (0, "b"): 11.0, (1, "a"): 4.0, (1, "b"): 4.0, (2, "a"): 2.0, (2, "b"): 6.0}  # (3, "a") unpaired

    seed_means = [2.0, 0.0, 3.0]  # seed 0: (1 + 3)/2, seed 1: (-1 + 1)/2, seed 2: (6 + 0)/2
    half = stats.t.ppf(0.975, 2) * statistics.stdev(seed_means) / math.sqrt(3)
    by_seed = quick_study.paired_by_seed(new, ref)
    assert by_seed["n"] == 3 and by_seed["mean"] == pytest.approx(statistics.fmean(seed_means))
    assert (by_seed["low"], by_seed["high"]) == pytest.approx((statistics.fmean(seed_means) - half, statistics.fmean(seed_means) + half))

    pairs = quick_study.paired(new, ref)
    assert pairs["n"] == 6 and pairs["mean"] == pytest.approx(10 / 6)
    assert quick_study.paired_by_seed({(0, "a"): 1.0}, {(0, "a"): 0.0}) == {"n": 1, "mean": 1.0, "low": None, "high": None}


def test_quick_study_compares_the_report_tables_over_their_shared_columns(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    quick_study = __import__("quick_study")
    tables = {"ref": {"same.csv": "a,b\n1,2\n", "extra_column.csv": "a\n1\n", "changed.csv": "a\n1\n", "old.csv": "a\n1\n"},
              "new": {"same.csv": "a,b\n1,2\n", "extra_column.csv": "a,p_adjusted\n1,0.5\n", "changed.csv": "a\n1.0\n",
                      "new.csv": "a\n1\n"}}
    for label, files in tables.items():
        folder = tmp_path / label / "report" / "tables"
        folder.mkdir(parents=True)
        for name, text in files.items():
            (folder / name).write_text(text)
    assert quick_study.compare_tables(tmp_path / "ref", tmp_path / "new") == {
        "identical": ["extra_column.csv", "same.csv"], "differ": {"changed.csv": ["a"]}, "only_ref": ["old.csv"], "only_new": ["new.csv"]}


def test_benchmarks_readme_is_a_short_record():
    """benchmarks/README.md: one table and short sections, under 120 lines of at most 160 characters;
    every results file it names exists."""
    import re

    text = (REPO / "benchmarks" / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) < 120 and [i + 1 for i, line in enumerate(lines) if len(line) > 160] == []
    named = set(re.findall(r"`([\w.-]+\.md)`", text)) - {"README.md", "gpu.md"}  # gpu.md: written by the first GPU run
    missing = [name for name in sorted(named) if not (REPO / "benchmarks" / "results" / name).exists()
               and "…" not in name]
    assert missing == []
