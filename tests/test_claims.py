"""report.claims on constructed results whose verdict is known: supported, contradicted, inconclusive."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contrastlab.report.claim_table import claims_rows
from contrastlab.report.claims import (
    Claim, ClaimInputs, ClaimSettings, flatness_claims, progress_auc, progress_claims, robustness_claims, robustness_score,
)
from contrastlab.stats import equivalence_ratio, paired_difference

TASKS = ["t0", "t1", "t2", "t3", "t4", "t5"]
SEEDS = [0, 10, 20]


def by_id(rows: list[Claim]) -> dict[str, Claim]:
    return {r.claim: r for r in rows}


# --- claim 1 ----------------------------------------------------------------------------------


def sharpness_data(scale: dict[str, float], noise: float, seed: int = 0, tasks=TASKS):
    """(method, task) -> per-seed sharpness = task level × method scale × lognormal noise."""
    rng = np.random.default_rng(seed)
    levels = {t: 10.0 * (1 + i) for i, t in enumerate(tasks)}
    return {(m, t): list(levels[t] * s * np.exp(rng.normal(0, noise, len(SEEDS))))
            for m, s in scale.items() for t in tasks}


def test_claim1_supported_when_all_ratios_are_near_one():
    rows = by_id(flatness_claims(sharpness_data({"simclr": 1.0, "supcon": 1.05, "supce": 0.95}, 0.02),
                                 quantity="filter-normalized top Hessian eigenvalue", margin=2.0))
    assert [rows[k].verdict for k in ("1", "1a", "1b", "1c")] == ["supported"] * 4
    assert "filter-normalized top Hessian eigenvalue" in rows["1"].text
    assert rows["1a"].unit == "tasks" and rows["1a"].n == len(TASKS)
    assert rows["1a"].statistic.startswith("sharpness ratio SimCLR/SupCon")
    assert 1 / 2 < rows["1"].ci_low <= rows["1"].ci_high < 2
    assert rows["1"].p_value == max(rows[k].p_value for k in ("1a", "1b", "1c")) < 0.05


def test_claim1_contradicted_when_one_method_is_much_sharper():
    rows = by_id(flatness_claims(sharpness_data({"simclr": 1.0, "supcon": 1.0, "supce": 6.0}, 0.05),
                                 quantity="raw top eigenvalue", margin=2.0))
    assert rows["1"].verdict == "contradicted"
    assert rows["1a"].verdict == "supported"  # simclr/supcon
    assert rows["1b"].verdict == rows["1c"].verdict == "contradicted"  # .../supce
    assert rows["1"].ci_high < 0.5 and rows["1"].statistic.endswith("deciding pair")


def test_claim1_inconclusive_when_noisy():
    rows = by_id(flatness_claims(sharpness_data({"simclr": 1.0, "supcon": 1.0, "supce": 1.0}, 1.5, seed=2,
                                                tasks=TASKS[:3]), quantity="q", margin=2.0))
    assert rows["1"].verdict == "inconclusive"
    assert all(rows[k].verdict != "contradicted" for k in ("1a", "1b", "1c"))


def test_claim1_matches_tost_on_task_means_and_single_task_pairs_by_seed():
    data = sharpness_data({"simclr": 1.0, "supcon": 1.3, "supce": 0.9}, 0.3, seed=5)
    row = by_id(flatness_claims(data, quantity="q", margin=1.5))["1c"]  # supcon / supce
    a = [np.mean(data[("supcon", t)]) for t in TASKS]
    b = [np.mean(data[("supce", t)]) for t in TASKS]
    e = equivalence_ratio(a, b, 1.5, 0.95)
    assert (row.estimate, row.ci_low, row.ci_high, row.p_value) == pytest.approx((e.estimate, e.ci_low, e.ci_high,
                                                                                   e.p_value))
    one = {("SimCLR", "t"): {0: 1.0, 10: 2.0, 20: 3.0}, ("supcon", "t"): {20: 3.1, 10: 2.1, 0: 1.05},
           ("supce", "t"): [1.0, 2.0]}
    rows = by_id(flatness_claims(one, quantity="q"))
    assert rows["1a"].unit == "seeds" and rows["1a"].n == 3  # paired by seed key, method case-insensitive
    assert rows["1a"].estimate == pytest.approx(math.exp(np.mean(np.log([1 / 1.05, 2 / 2.1, 3 / 3.1]))))
    # a list counts as seeds 0, 1: only seed 0 is shared with SimCLR's {0, 10, 20}: one pair, no interval
    assert rows["1b"].n == 1 and rows["1b"].verdict == "inconclusive" and "single pair" in rows["1b"].note


def test_claim1_missing_method_is_an_inconclusive_row_saying_so():
    data = {k: v for k, v in sharpness_data({"simclr": 1.0, "supce": 1.0}, 0.01).items()}
    rows = by_id(flatness_claims(data, quantity="q"))
    assert rows["1b"].verdict == "supported"
    assert rows["1a"].verdict == "inconclusive" and rows["1a"].n == 0 and "no results for SupCon" in rows["1a"].note
    assert rows["1"].verdict == "inconclusive" and "SupCon" in rows["1"].note


# --- claim 2 ----------------------------------------------------------------------------------


def progress_data(rates: dict[str, float], finals: dict[str, float], noise: float, seed: int = 0, tasks=TASKS,
                  epochs: int = 10):
    """t_w(e) = final · (1 − exp(−rate · e)) + noise, per (method, task, seed)."""
    rng = np.random.default_rng(seed)
    e = np.arange(epochs + 1)
    return {(m, t): {s: finals[m] * (1 - np.exp(-rates[m] * e)) + rng.normal(0, noise, e.size) for s in SEEDS}
            for m in rates for t in tasks}


def test_progress_auc_is_epoch_normalized_trapezoid():
    assert progress_auc([0.0, 1.0]) == 0.5
    assert progress_auc([0.2, 0.2, 0.2, 0.2]) == pytest.approx(0.2)
    assert progress_auc(np.linspace(0, 1, 31)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 snapshots"):
        progress_auc([0.3])


def test_claim2_supported_contradicted_inconclusive():
    good = progress_data({"simclr": 0.8, "supce": 0.4, "supcon": 0.2}, {"simclr": 0.9, "supce": 0.8, "supcon": 0.7},
                         0.005)
    rows = by_id(progress_claims(good, formula="t_w"))
    assert [rows[k].verdict for k in ("2a", "2b", "2c", "2d")] == ["supported"] * 4
    assert all("√p" in rows[k].text and "t_w" in rows[k].statistic for k in rows)
    assert rows["2a"].unit == "tasks" and rows["2a"].n == len(TASKS)

    bad = progress_data({"simclr": 0.2, "supce": 0.8, "supcon": 0.9}, {"simclr": 0.7, "supce": 0.9, "supcon": 0.95},
                        0.005)
    rows = by_id(progress_claims(bad, formula="t_w_raw"))
    assert [rows[k].verdict for k in ("2a", "2b", "2c", "2d")] == ["contradicted"] * 4
    assert "raw p" in rows["2a"].text

    noisy = progress_data({"simclr": 0.5, "supce": 0.5, "supcon": 0.5}, {"simclr": 0.8, "supce": 0.8, "supcon": 0.8},
                          0.3, seed=1, tasks=TASKS[:3])
    rows = by_id(progress_claims(noisy, formula="t_w"))
    assert rows["2a"].verdict == rows["2b"].verdict == "inconclusive"


def test_claim2_numbers_are_paired_differences_of_task_means():
    data = progress_data({"simclr": 0.6, "supce": 0.5, "supcon": 0.3}, {"simclr": 0.9, "supce": 0.8, "supcon": 0.7},
                         0.05, seed=3)
    row = by_id(progress_claims(data, formula="t_w"))["2b"]
    a = [np.mean([data[("simclr", t)][s][-1] for s in SEEDS]) for t in TASKS]
    b = [np.mean([data[("supce", t)][s][-1] for s in SEEDS]) for t in TASKS]
    d = paired_difference(a, b)
    assert (row.estimate, row.ci_low, row.ci_high, row.p_value) == pytest.approx((d.estimate, d.ci_low, d.ci_high,
                                                                                   d.p_value))


def test_claim2_single_task_pairs_by_seed_and_missing_supcon():
    data = progress_data({"simclr": 0.8, "supce": 0.3}, {"simclr": 0.9, "supce": 0.8}, 0.002, tasks=["only"])
    rows = by_id(progress_claims(data, formula="t_w"))
    assert rows["2a"].unit == "seeds" and rows["2a"].n == 3 and rows["2a"].verdict == "supported"
    assert rows["2c"].verdict == rows["2d"].verdict == "inconclusive" and "SupCon" in rows["2c"].note


# --- claim 3 ----------------------------------------------------------------------------------

EPS = np.arange(16) / 255


def test_robustness_score_trapezoid_and_interpolation():
    flat = np.full(EPS.size, 0.8)
    assert robustness_score(EPS, flat, 8 / 255) == pytest.approx(1.0)
    linear = 0.9 * (1 - EPS * 255 / 16)  # falls to 0 at 16/255: relative area over [0, 8/255] = 0.75
    assert robustness_score(EPS, linear, 8 / 255) == pytest.approx(0.75)
    coarse = np.array([0, 2, 4, 10]) / 255  # eps_max 8/255 is not a grid point: interpolated
    assert robustness_score(coarse, 0.9 * (1 - coarse * 255 / 16), 8 / 255) == pytest.approx(0.75)
    shuffled = np.array([4, 0, 10, 2]) / 255
    assert robustness_score(shuffled, 0.9 * (1 - shuffled * 255 / 16), 8 / 255) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="short of eps_max"):
        robustness_score(EPS[:5], flat[:5], 8 / 255)
    with pytest.raises(ValueError, match="clean accuracy"):
        robustness_score(EPS[1:], flat[1:], 8 / 255)
    with pytest.raises(ValueError, match="fraction"):
        robustness_score(EPS, flat, 8.0)


def robustness_data(decay: dict[str, float], noise: float, seed: int = 0, tasks=TASKS):
    """accuracy(ε) = clean · exp(−decay · ε·255) + noise; clean accuracy differs per task."""
    rng = np.random.default_rng(seed)
    out = {}
    for m, k in decay.items():
        for i, t in enumerate(tasks):
            clean = 0.6 + 0.05 * i
            out[(m, t)] = {s: (EPS, np.clip(clean * np.exp(-k * EPS * 255) + rng.normal(0, noise, EPS.size), 0, 1))
                           for s in SEEDS}
            for s in SEEDS:
                out[(m, t)][s][1][0] = clean
    return out


def test_claim3_supported_contradicted_inconclusive():
    rows = by_id(robustness_claims(robustness_data({"simclr": 0.05, "supce": 0.3, "supcon": 0.4}, 0.005),
                                   attack_space="pixel", eps_max=8 / 255))
    assert rows["3a"].verdict == rows["3b"].verdict == "supported"
    assert "8/255" in rows["3a"].text and "pixel space" in rows["3a"].text
    rows = by_id(robustness_claims(robustness_data({"simclr": 0.5, "supce": 0.1, "supcon": 0.1}, 0.005),
                                   attack_space="normalized", eps_max=8 / 255))
    assert rows["3a"].verdict == rows["3b"].verdict == "contradicted"
    rows = by_id(robustness_claims(robustness_data({"simclr": 0.2, "supce": 0.2, "supcon": 0.2}, 0.2, seed=4,
                                                   tasks=TASKS[:2]), attack_space="pixel", eps_max=8 / 255))
    assert rows["3a"].verdict == rows["3b"].verdict == "inconclusive"


def test_claim3_short_curve_names_the_run():
    data = robustness_data({"simclr": 0.1, "supce": 0.2}, 0.0)
    data[("supce", "t2")][10] = (EPS[:4], np.full(4, 0.5))
    with pytest.raises(ValueError, match=r"supce on task t2, seed 10: .*short of eps_max"):
        robustness_claims(data, attack_space="pixel", eps_max=8 / 255)


# --- all claims -------------------------------------------------------------------------------


def test_claims_rows_for_csv():
    rows = claims_rows(ClaimInputs(
        sharpness=sharpness_data({"simclr": 1.0, "supcon": 1.0, "supce": 1.0}, 0.02),
        sharpness_quantity="raw top eigenvalue",
        progress={"t_w": progress_data({"simclr": 0.8, "supce": 0.4, "supcon": 0.2},
                                       {"simclr": 0.9, "supce": 0.8, "supcon": 0.7}, 0.005),
                  "t_w_raw": progress_data({"simclr": 0.8, "supce": 0.4, "supcon": 0.2},
                                           {"simclr": 0.9, "supce": 0.8, "supcon": 0.7}, 0.005, seed=1)},
        robustness=robustness_data({"simclr": 0.05, "supce": 0.3, "supcon": 0.4}, 0.005)),
        ClaimSettings(confidence=0.9, margin=2.0, eps_max=8 / 255))
    assert [r["claim"] for r in rows] == ["1", "1a", "1b", "1c"] + ["2a", "2b", "2c", "2d"] * 2 + ["3a", "3b"]
    assert list(rows[0])[:13] == ["claim", "text", "statistic", "estimate", "ci_low", "ci_high", "p_value", "n", "unit",
                                  "verdict", "rule", "note", "p_adjusted"]
    assert {"seeds_to_decide", "tasks_to_decide"} <= set(rows[0])
    assert all(r["verdict"] == "supported" for r in rows)
    assert "90%" in rows[4]["rule"]
    empty = claims_rows()
    assert [(r["claim"], r["verdict"]) for r in empty] == [("1", "inconclusive"), ("2", "inconclusive"),
                                                            ("3", "inconclusive")]
    assert all(r["note"].startswith("no ") for r in empty)
