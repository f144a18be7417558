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
def test_gpu_benchmark_cpu_smoke_writes_every_field(tmp_path):
    out = tmp_path / "results"
    # --skip-compile: torch.compile on a CPU builds C++ kernels, ~50 s per model with a cold inductor
    # cache (a fresh CI machine), and a failing compile only marks its own row, which nothing here reads.
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--cpu-smoke", "--skip-compile", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "gpu.json").read_text())
    markdown = (out / "gpu.md").read_text()

    assert results["mode"] == "cpu-smoke" and "--cpu-smoke" in results["command"] and "--skip-compile" in results["command"]
    assert results["command"] in markdown
    for key in ("device", "device_name", "torch", "cuda"):
        assert key in results["environment"]

    study = results["micro_study"]
    assert study["returncode"] == 0, study.get("error")
    assert "--preset paper" in study["command"]
    assert set(study["stage_seconds"]) >= STAGES and all(v >= 0 for v in study["stage_seconds"].values())
    assert sum(study["stage_units"].values()) == study["units"] > 0
    assert study["devices"] == {"cpu": study["units"]} and study["all_cuda"] is False
    assert study["done_json_has_device"] and study["done_json_has_precision"]

    assert results["errors"] == {}
    t = results["throughput"]
    for method in ("simclr", "supcon", "supce"):
        assert t["pretrain"][method]["eager"]["images_per_s"] > 0
        assert t["pretrain"][method]["best_images_per_s"] > 0
        assert set(t["pretrain"][method]) == {"eager", "best_images_per_s"}  # no compiled row: --skip-compile
    assert isinstance(t["pretrain"]["compile_available"], bool)
    assert t["inference"]["images_per_s"] > 0
    assert t["landscape"]["seconds"] > 0 and t["landscape"]["seconds_at_51x51"] > 0
    assert t["hvp"]["seconds_per_product"] > 0
    assert t["attacks"]["fgsm"]["seconds_per_eps"] > 0 and t["attacks"]["pgd"]["seconds_per_eps"] > 0

    projection = results["projection"]
    assert projection["missing"] == []
    assert set(projection["stages"]) == {"pretraining", "probes", "landscapes", "sharpness", "attacks", "geometry"}
    assert all(s["formula"] and s["hours"] >= 0 for s in projection["stages"].values())
    assert projection["total_hours"] == pytest.approx(sum(s["hours"] for s in projection["stages"].values()))

    targets = results["targets"]
    assert set(targets) == {"simclr_images_per_s", "supce_images_per_s", "landscape_51_seconds", "full_grid_hours",
                            "micro_study_all_cuda"}
    assert all(isinstance(target["met"], bool) for target in targets.values())
    assert targets["micro_study_all_cuda"]["met"] is False  # the CPU is not cuda
    assert "full paper grid" in markdown and "| pretrain simclr |" in markdown


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
