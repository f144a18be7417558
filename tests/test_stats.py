"""contrastlab.stats against scipy on known data, plus the degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from contrastlab.stats import _rank_rows, equivalence_ratio, paired_difference, spearman_bootstrap, summarize

A = [0.81, 0.79, 0.86, 0.90, 0.77, 0.84]
B = [0.78, 0.80, 0.80, 0.85, 0.74, 0.83]


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_summarize_matches_scipy_t_interval(confidence):
    s = summarize(A, confidence)
    x = np.array(A)
    low, high = st.t.interval(confidence, len(A) - 1, loc=x.mean(), scale=st.sem(x))
    assert s.n == 6 and s.mean == pytest.approx(x.mean()) and s.std == pytest.approx(x.std(ddof=1))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))


def test_summarize_small_and_flat_samples():
    one = summarize([3.0])
    assert one.n == 1 and one.mean == 3.0 and math.isnan(one.std) and math.isnan(one.ci_low)
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.mean)
    flat = summarize([2.0, 2.0, 2.0])
    assert flat.std == 0.0 and flat.ci_low == flat.ci_high == 2.0
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        summarize(A, 95)


def test_paired_difference_matches_ttest_rel():
    d = paired_difference(A, B, 0.95)
    ref = st.ttest_rel(A, B)
    diff = np.subtract(A, B)
    low, high = st.t.interval(0.95, len(A) - 1, loc=diff.mean(), scale=st.sem(diff))
    assert d.n == 6 and d.estimate == pytest.approx(diff.mean())
    assert d.p_value == pytest.approx(ref.pvalue)
    assert (d.ci_low, d.ci_high) == pytest.approx((low, high))
    # antisymmetric in its arguments
    r = paired_difference(B, A, 0.95)
    assert r.estimate == pytest.approx(-d.estimate) and r.p_value == pytest.approx(d.p_value)
    assert (r.ci_low, r.ci_high) == pytest.approx((-d.ci_high, -d.ci_low))


def test_paired_difference_degenerate_cases():
    same = paired_difference(A, A)
    assert same.estimate == 0.0 and same.p_value == 1.0 and same.ci_low == same.ci_high == 0.0
    shifted = paired_difference(np.add(A, 0.1), A)  # differences equal up to rounding
    assert shifted.p_value == 0.0 and shifted.ci_low == shifted.ci_high == pytest.approx(0.1)
    single = paired_difference([1.0], [0.5])
    assert single.n == 1 and single.estimate == 0.5 and math.isnan(single.p_value) and math.isnan(single.ci_low)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0, 2.0], [1.0])


def _hand_tost(a, b, margin, alpha):
    r = np.log(a) - np.log(b)
    p_low = st.ttest_1samp(r, -math.log(margin), alternative="greater").pvalue
    p_high = st.ttest_1samp(r, math.log(margin), alternative="less").pvalue
    low, high = st.t.interval(1 - 2 * alpha, len(r) - 1, loc=r.mean(), scale=st.sem(r))
    return max(p_low, p_high), math.exp(low), math.exp(high), math.exp(r.mean())


@pytest.mark.parametrize("margin", [1.05, 1.2, 2.0])
def test_equivalence_ratio_matches_hand_tost(margin):
    e = equivalence_ratio(A, B, margin, 0.95)
    p, low, high, gm = _hand_tost(np.array(A), np.array(B), margin, 0.05)
    assert e.ci_level == pytest.approx(0.90) and e.margin == margin and e.n == 6
    assert e.p_value == pytest.approx(p) and e.estimate == pytest.approx(gm)
    assert (e.ci_low, e.ci_high) == pytest.approx((low, high))
    # equivalence shown <=> TOST p < alpha <=> the 90% interval lies inside (1/m, m)
    assert e.equivalent == (p < 0.05) == (1 / margin < low and high < margin)


def test_equivalence_ratio_decisions_and_degenerate_cases():
    rng = np.random.default_rng(1)
    b = rng.uniform(1, 2, 20)
    assert equivalence_ratio(b * rng.uniform(0.97, 1.03, 20), b, 2.0).equivalent
    far = equivalence_ratio(5 * b * rng.uniform(0.97, 1.03, 20), b, 2.0)
    assert not far.equivalent and far.ci_low > 2.0
    exact = equivalence_ratio(1.5 * b, b, 2.0)
    assert exact.p_value == 0.0 and exact.equivalent and exact.ci_low == exact.ci_high == pytest.approx(1.5)
    outside = equivalence_ratio(3 * b, b, 2.0)
    assert outside.p_value == 1.0 and not outside.equivalent
    single = equivalence_ratio([2.0], [1.0], 2.0)
    assert single.estimate == 2.0 and math.isnan(single.p_value) and not single.equivalent
    with pytest.raises(ValueError, match="positive"):
        equivalence_ratio([1.0, 0.0], [1.0, 1.0], 2.0)
    with pytest.raises(ValueError, match="margin"):
        equivalence_ratio(A, B, 0.5)


def test_spearman_bootstrap_matches_spearmanr_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = x + rng.normal(scale=0.8, size=30)
    y[3] = y[4]  # a tie
    c = spearman_bootstrap(x, y, n_boot=500, seed=3)
    ref = st.spearmanr(x, y)
    assert c.rho == pytest.approx(ref.statistic) and c.p_value == pytest.approx(ref.pvalue)
    assert c.ci_low < c.rho < c.ci_high and -1 <= c.ci_low and c.ci_high <= 1
    assert spearman_bootstrap(x, y, n_boot=500, seed=3) == c
    assert spearman_bootstrap(x, y, n_boot=500, seed=4) != c
    # the bootstrap by hand, with scipy's spearmanr per resample
    index = np.random.default_rng(3).integers(0, 30, size=(500, 30))
    boot = np.array([st.spearmanr(x[i], y[i]).statistic for i in index])
    assert (c.ci_low, c.ci_high) == pytest.approx(tuple(np.nanpercentile(boot, [2.5, 97.5])))


def test_ranks_and_the_spearman_p_value_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    tied = rng.integers(0, 4, size=(40, 9)).astype(float)  # many ties per row
    np.testing.assert_array_equal(_rank_rows(tied), st.rankdata(tied, axis=-1))
    np.testing.assert_array_equal(_rank_rows(np.array([2.0, 2.0, 2.0])), [2.0, 2.0, 2.0])
    for n in (3, 4, 11):
        x, y = rng.normal(size=n), rng.normal(size=n)
        assert spearman_bootstrap(x, y, n_boot=10).p_value == pytest.approx(st.spearmanr(x, y).pvalue, rel=1e-12)
    assert spearman_bootstrap([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 8.0, 9.0], n_boot=10).p_value == 0.0  # ρ = 1


def test_spearman_bootstrap_small_and_constant_inputs():
    assert math.isnan(spearman_bootstrap([1.0], [2.0]).rho)
    two = spearman_bootstrap([1.0, 2.0], [3.0, 5.0])
    assert two.rho == pytest.approx(1.0) and math.isnan(two.ci_low)
    assert math.isnan(spearman_bootstrap([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).rho)


# --- pooled intervals, multiplicity, power, alpha spending ------------------------------------------

from contrastlab import stats as cs  # noqa: E402


def test_pooled_spread_is_the_anova_error_term():
    groups = [[1.0, 2.0, 4.0], [10.0, 11.0], [5.0]]  # a single value adds no degree of freedom
    squares = sum(((np.array(g) - np.mean(g)) ** 2).sum() for g in groups)
    pooled = cs.pooled_spread(groups)
    assert pooled.df == 3 and pooled.sd == pytest.approx(math.sqrt(squares / 3))
    assert math.isnan(cs.pooled_spread([[1.0], [2.0]]).sd) and cs.pooled_spread([[1.0]]).df == 0


def test_logit_interval_stays_in_range_and_matches_the_formula():
    low, high = cs.logit_interval(52.17, 0.4, 3, 0.95)
    centre, half = math.log(0.5217 / 0.4783), st.t.ppf(0.975, 3) * 0.4
    assert (low, high) == pytest.approx((100 / (1 + math.exp(-(centre - half))), 100 / (1 + math.exp(-(centre + half)))))
    wide = cs.logit_interval(99.5, 5.0, 1, 0.95)  # df 1, huge spread: still inside [0, 100]
    assert 0 < wide[0] < 99.5 < wide[1] <= 100
    assert cs.logit_interval(100.0, 0.0, 2) == pytest.approx((99.99, 99.99))
    assert all(math.isnan(v) for v in cs.logit_interval(50.0, 0.1, 0))


def _holm_reference(p):
    """Holm from its definition: reject H_(i) while p_(j) ≤ α/(m − j + 1) for all j ≤ i; the adjusted
    p-value is the smallest α at which H_i is rejected."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for rank, i in enumerate(order):
        out[i] = min(1.0, max(p[order[j]] * (m - j) for j in range(rank + 1)))
    return out


def test_holm_against_its_definition_and_nan_is_not_counted():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = list(rng.uniform(0, 0.2, rng.integers(1, 12)))
        assert cs.holm(p) == pytest.approx(_holm_reference(p))
    adjusted = cs.holm([0.01, float("nan"), 0.04])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert cs.holm_levels([0.03, 0.01, 0.2], 0.05) == pytest.approx([0.025, 0.05 / 3, 0.05])


def test_equivalence_difference_is_tost_on_the_mean_difference():
    e = cs.equivalence_difference(A, B, 0.05, 0.95)
    d = np.array(A) - np.array(B)
    se = d.std(ddof=1) / math.sqrt(d.size)
    p = max(st.t.sf((d.mean() + 0.05) / se, d.size - 1), st.t.cdf((d.mean() - 0.05) / se, d.size - 1))
    half = st.t.ppf(0.95, d.size - 1) * se
    assert (e.estimate, e.ci_low, e.ci_high, e.p_value) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half, p))
    assert e.equivalent == (p < 0.05) and e.ci_level == pytest.approx(0.9)


@pytest.mark.parametrize("effect, bound", [(0.8, None), (0.0, None), (0.2, 1.0), (1.6, 1.0)])
def test_decision_power_matches_simulation(effect, bound):
    design = cs.Design(within_sd=1.0, between_sd=0.5, seeds=3, tasks=6)
    rng = np.random.default_rng(1)
    draws = 20000
    task_effects = effect + rng.normal(0, 0.5, (draws, 6)) + rng.normal(0, 1.0, (draws, 6, 3)).mean(axis=2)
    mean, se = task_effects.mean(axis=1), task_effects.std(axis=1, ddof=1) / math.sqrt(6)
    alpha = 0.05
    if bound is None:
        decided = np.abs(mean / se) > st.t.ppf(1 - alpha / 2, 5)
    else:
        c = st.t.ppf(1 - alpha, 5)
        inside = (mean - c * se > -bound) & (mean + c * se < bound)
        outside = (mean - c * se > bound) | (mean + c * se < -bound)
        decided = outside if abs(effect) >= bound else inside
    assert cs.decision_power(effect, design, alpha, bound) == pytest.approx(decided.mean(), abs=0.015)


def test_size_to_decide_is_the_first_size_with_the_power():
    design = cs.Design(within_sd=1.0, between_sd=0.0, seeds=2, tasks=1)
    n = cs.size_to_decide(1.0, design, 0.05, vary="seeds")
    power = lambda k: cs.decision_power(1.0, cs.Design(1.0, 0.0, k, 1), 0.05)  # noqa: E731
    assert power(n) >= 0.8 > power(n - 1) and n == 10  # the textbook paired-t size for d = 1
    assert cs.size_to_decide(0.0, design, 0.05, vary="seeds") is None  # at the boundary: never
    tasks = cs.Design(within_sd=1.0, between_sd=0.6, seeds=2, tasks=4)
    assert cs.size_to_decide(0.5, tasks, 0.05, vary="seeds") is None  # between-task spread: seeds cannot
    assert cs.size_to_decide(0.5, tasks, 0.05, vary="tasks") > 4


def test_obrien_fleming_spending():
    assert cs.obrien_fleming_spent(1.0, 0.05) == pytest.approx(0.05)
    assert cs.obrien_fleming_spent(0.5, 0.05) == pytest.approx(2 - 2 * st.norm.cdf(st.norm.ppf(0.975) / math.sqrt(0.5)))
    levels = cs.look_levels([2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0], 0.05)
    assert sum(levels) == pytest.approx(0.05) and levels[0] < 0.001 and all(v > 0 for v in levels)
    assert levels == sorted(levels)  # O'Brien–Fleming: strict early, most of α kept for the last looks
