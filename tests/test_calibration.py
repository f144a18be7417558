"""Calibration of the report's intervals and verdicts on simulated per-seed data whose truth is known.

- the accuracy tables' interval covers the true mean accuracy 93-97% of the time at 95%, with
  n = 2, 3 and 5 seeds (2,000 simulated tables each);
- under a true null for every claim, Holm keeps the chance of any "supported"/"contradicted"
  over the whole claim family ≤ 5%, and the --until-decided spending boundary keeps it ≤ 5% over
  all its looks (where testing every look at 5% does not);
- the seeds (and tasks) to decide a claim are, at the truth, within a factor of 2 of the size at
  which simulated studies decide it 80% of the time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

from contrastlab import stats
from contrastlab.report.claim_table import claims_rows
from contrastlab.report.claims import (
    DERIVED, INCONCLUSIVE, Claim, ClaimInputs, ClaimSettings, _difference_row, decide_sizes,
    decide_together,
)
from contrastlab.report.tables import cell_interval, cell_model, pooled_mean_interval

DRAWS = 2000


def expected_accuracy(mu: np.ndarray, sd: float) -> np.ndarray:
    """100 · E[expit(N(mu, sd²))] by Gauss–Hermite quadrature: the true mean accuracy of a cell."""
    nodes, weights = hermegauss(40)
    return 100 * (stats.expit(mu[:, None] + sd * nodes[None, :]) * weights).sum(axis=1) / weights.sum()


@pytest.mark.parametrize("n", [2, 3, 5])
def test_accuracy_interval_covers_the_true_mean_95_percent_of_the_time(n):
    rng = np.random.default_rng(n)
    methods, tasks, sd = 3, 4, 0.3  # 12 cells, accuracies 40-95%, seed spread constant on the logit scale
    mu = rng.uniform(-0.4, 3.0, methods * tasks)
    truth = expected_accuracy(mu, sd)
    keys = [(f"m{m}", f"t{t}") for m in range(methods) for t in range(tasks)]
    covered, covered_all, cells = 0, 0, 0
    for _ in range(DRAWS):
        values = 100 * stats.expit(mu[:, None] + rng.normal(0, sd, (mu.size, n)))
        by_key = {k: dict(enumerate(v)) for k, v in zip(keys, values)}
        model = cell_model(by_key, (0.0, 100.0))
        for k, v, true in zip(keys, values, truth):
            low, high, _ = cell_interval(model, list(v), 0.95)
            assert 0.0 <= low <= high <= 100.0
            covered += low <= true <= high
            cells += 1
        overall = pooled_mean_interval(model, [list(v) for v in values[:tasks]], 0.95)  # method m0 over its tasks
        covered_all += overall["ci_low"] <= truth[:tasks].mean() <= overall["ci_high"]
    assert 0.93 <= covered / cells <= 0.97, covered / cells
    assert 0.93 <= covered_all / DRAWS <= 0.97, covered_all / DRAWS


# --- verdicts under a true null --------------------------------------------------------------------

TASKS, METHODS, MARGIN = 4, ("simclr", "supcon", "supce"), 1.0
EPS = np.array([0.0, 4.0, 8.0]) / 255


def null_study(rng, seeds: int) -> ClaimInputs:
    """Per-seed results where every tested claim is at its null: methods identical in progress and
    robustness; the supervised family's accuracy exactly the accuracy margin above the contrastive one."""
    progress, robustness, accuracy = {}, {}, {}
    epochs = np.arange(4)
    for t in range(TASKS):
        level = rng.uniform(0.5, 0.9)
        for m in METHODS:
            shift = MARGIN if m == "supce" else 0.0
            progress[(m, t)] = {s: level * (1 - np.exp(-0.8 * epochs)) + rng.normal(0, 0.03, epochs.size)
                                for s in range(seeds)}
            robustness[(m, t)] = {s: (EPS, np.array([0.9, 0.6, 0.3]) + rng.normal(0, 0.03, 3) * [0, 1, 1])
                                  for s in range(seeds)}
            accuracy[(m, t)] = {s: 70 + 5 * t + shift + rng.normal(0, 1.0) for s in range(seeds)}
    families = {"simclr": "contrastive", "supcon": "contrastive", "supce": "supervised"}
    return ClaimInputs(progress={"t_w": progress}, robustness=robustness, accuracy=accuracy, families=families)


def any_false_verdict(rows: list[dict]) -> bool:
    """A directional claim decided either way, or the transfer claim (supervised − contrastive exactly
    at the margin: TOST's null |difference| ≥ margin holds) found "supported"."""
    return any(r["verdict"] != INCONCLUSIVE if r["test"] == "directional" else r["verdict"] == "supported"
               for r in rows if r["test"] != DERIVED)


def test_holm_keeps_the_familywise_false_verdict_rate_at_5_percent():
    rng = np.random.default_rng(7)
    settings = ClaimSettings(confidence=0.95, accuracy_margin=MARGIN, eps_max=8 / 255)
    unadjusted = ClaimSettings(confidence=0.95, accuracy_margin=MARGIN, eps_max=8 / 255, adjust="none")
    draws, holm_errors, raw_errors, tested = 400, 0, 0, 0
    for _ in range(draws):
        inputs = null_study(rng, seeds=2)
        rows = claims_rows(inputs, settings)
        tested = sum(r["test"] != DERIVED and math.isfinite(r["p_value"]) for r in rows)
        holm_errors += any_false_verdict(rows)
        raw_errors += any_false_verdict(claims_rows(inputs, unadjusted))
    assert tested == 9  # 2a-2d, 3a-3b, and the families F1a, F3a, F4a (no sharpness here)
    # Holm guarantees ≤ 5%; 9 independent nulls sit just under it (1 − (1 − 0.05/9)^9 = 4.9%; measured
    # 5.15% over 2,000 draws): the Monte Carlo estimate is allowed its two standard errors.
    assert holm_errors / draws <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / draws), holm_errors / draws
    assert raw_errors / draws > 0.05  # without adjustment the family's error is larger


def sequential_errors(levels: list[float], rng, draws: int, seeds: list[int]) -> int:
    """Draws with a false verdict at any look: 8 independent directional claims under the null,
    each paired over 4 tasks, the looks seeing the first k seeds."""
    errors = 0
    for _ in range(draws):
        task = rng.normal(0, 1.0, (8, 2, TASKS, 1))
        values = task + rng.normal(0, 1.0, (8, 2, TASKS, max(seeds)))  # claim, method, task, seed
        for k, level in zip(seeds, levels):
            rows = []
            for c in range(8):
                per_run = {m: {t: dict(enumerate(values[c, i, t, :k])) for t in range(TASKS)}
                           for i, m in enumerate(("a", "b"))}
                rows.append(_difference_row(f"{c}", "", "", per_run, "a", "b", 0.95))
            if any(r.verdict != INCONCLUSIVE for r in decide_together(rows, alpha=level, own_alpha=0.05)):
                errors += 1
                break
    return errors


def test_until_decided_boundary_keeps_the_error_at_5_percent_over_its_looks():
    seeds = [2, 3, 4, 5, 6]
    levels = stats.look_levels([k / seeds[-1] for k in seeds], 0.05)
    draws = 500
    spent = sequential_errors(levels, np.random.default_rng(3), draws, seeds)
    naive = sequential_errors([0.05] * len(seeds), np.random.default_rng(3), 200, seeds)
    assert spent / draws <= 0.05, spent / draws  # measured: 1.8%
    assert naive / 200 > 0.05  # every look at the full α: more false verdicts (measured: 12.6% over 500)


# --- seeds and tasks to decide ---------------------------------------------------------------------


def simulated_power(effect: float, design: stats.Design, draws: int, rng) -> float:
    """Share of simulated studies of ``design`` (task-paired) whose 95% interval excludes 0."""
    task = effect + rng.normal(0, design.between_sd, (draws, design.tasks))
    means = task + rng.normal(0, design.within_sd, (draws, design.tasks, design.seeds)).mean(axis=2)
    se = means.std(axis=1, ddof=1) / math.sqrt(design.tasks)
    t = means.mean(axis=1) / se
    from scipy import stats as st

    return float((np.abs(t) > st.t.ppf(0.975, design.tasks - 1)).mean())


@pytest.mark.parametrize("effect, within, between", [(0.5, 1.0, 0.2), (0.3, 0.6, 0.1)])
def test_seeds_and_tasks_to_decide_are_within_a_factor_2_of_the_simulated_truth(effect, within, between):
    rng = np.random.default_rng(11)
    row = Claim("x", "", "", effect, -1.0, 1.0, 0.5, 6, "tasks", INCONCLUSIVE, "", sd_within=within,
                sd_between=between, seeds_per_task=2)
    seeds, tasks = (int(v) for v in decide_sizes(row, 0.05))
    # the truth: the sizes at which simulated studies decide 80% of the time
    by_seeds = [k for k in range(3, 4 * seeds) if simulated_power(effect, stats.Design(within, between, k, 6), 4000, rng) >= 0.8]
    by_tasks = [k for k in range(7, 4 * tasks) if simulated_power(effect, stats.Design(within, between, 2, k), 4000, rng) >= 0.8]
    true_seeds, true_tasks = by_seeds[0], by_tasks[0]
    assert true_seeds / 2 <= seeds <= 2 * true_seeds, (seeds, true_seeds)
    assert true_tasks / 2 <= tasks <= 2 * true_tasks, (tasks, true_tasks)
