"""Small-sample statistics for the report: summaries, paired differences, equivalence, rank correlation.

Plain functions over sequences of floats; each returns a frozen dataclass of plain floats
(``dataclasses.asdict`` turns it into a CSV row). Conventions, shared by every function:

- ``confidence`` is the two-sided level of the interval (0.95 → 95% interval, tests at α = 0.05).
- Undefined quantities are ``nan``, never an exception: an interval needs n ≥ 2, a p-value
  needs n ≥ 2 (and a spread or an exact tie, see :func:`paired_difference`).
- Non-finite inputs are a ``ValueError``: missing runs are the caller's to drop, explicitly.

    summarize(values, confidence=0.95) -> Summary(n, mean, std, ci_low, ci_high, confidence)
    paired_difference(a, b, confidence=0.95) -> Difference(n, estimate, std, ci_low, ci_high, p_value, confidence)
    equivalence_ratio(a, b, margin, confidence=0.95) -> Equivalence(n, estimate, ci_low, ci_high, ci_level,
                                                                    p_value, equivalent, margin)
    spearman_bootstrap(x, y, n_boot=2000, seed=0, confidence=0.95) -> Correlation(n, rho, ci_low, ci_high,
                                                                                  p_value, confidence)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special as _special  # Student's t from scipy.special: importing scipy.stats costs ~0.7 s more

__all__ = [
    "Correlation", "Difference", "Equivalence", "Summary",
    "equivalence_ratio", "paired_difference", "spearman_bootstrap", "summarize",
]

NAN = float("nan")
# A spread this small relative to the data is rounding noise, not variation: treat as zero so that
# "identical" and "constant shift" inputs get their exact answers instead of a 0/0 t statistic.
_ZERO_SPREAD = 1e-12


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (scipy.stats.t.ppf)."""
    return float(_special.stdtrit(df, q))


def _t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom (scipy.stats.t.cdf); P(T > t) is _t_cdf(−t)."""
    return float(_special.stdtr(df, t))


@dataclass(frozen=True)
class Summary:
    """Mean of n values with its sample std (ddof=1) and two-sided Student-t interval."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float


@dataclass(frozen=True)
class Difference:
    """Mean paired difference a − b, its t-interval and the two-sided paired-t p-value."""

    n: int
    estimate: float
    std: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float


@dataclass(frozen=True)
class Equivalence:
    """TOST of a paired ratio a/b against [1/margin, margin], on the log scale."""

    n: int
    estimate: float  # geometric mean of a_i / b_i
    ci_low: float  # interval of the ratio at level ci_level (1 − 2α)
    ci_high: float
    ci_level: float
    p_value: float  # TOST p-value: the larger of the two one-sided p-values
    equivalent: bool  # p_value < α, i.e. the interval lies strictly inside (1/margin, margin)
    margin: float


@dataclass(frozen=True)
class Correlation:
    """Spearman's rho with a percentile-bootstrap interval (pairs resampled) and scipy's p-value."""

    n: int
    rho: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float


def _as_values(values: Sequence[float], name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1) if np.size(values) else np.zeros(0)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return confidence


def _pair(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_values(a, "a"), _as_values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    return a, b


def _is_flat(values: np.ndarray, std: float) -> bool:
    scale = max(1.0, float(np.max(np.abs(values)))) if values.size else 1.0
    return std <= _ZERO_SPREAD * scale


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """n, mean, sample std (ddof=1) and the two-sided Student-t interval of the mean.

    n = 0: everything nan. n = 1: mean is the value, std and interval are nan (a single value says
    nothing about spread; 0 would claim a certainty it does not have). A zero std gives the
    degenerate interval [mean, mean].
    """
    confidence = _check_confidence(confidence)
    x = _as_values(values)
    n = int(x.size)
    if n == 0:
        return Summary(0, NAN, NAN, NAN, NAN, confidence)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, NAN, NAN, NAN, confidence)
    std = float(x.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, confidence)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """Paired t analysis of d_i = a_i − b_i: mean, t-interval, two-sided p-value (H0: mean d = 0).

    n < 2: interval and p-value nan. Zero spread of d (up to rounding): identical samples give
    p = 1 and the interval [0, 0]; a constant nonzero shift gives p = 0 and the interval [d, d]
    (the limit of the t-test as the spread goes to zero).
    """
    a, b = _pair(a, b)
    s = summarize(a - b, confidence)
    if s.n < 2:
        return Difference(s.n, s.mean, s.std, NAN, NAN, NAN, s.confidence)
    if _is_flat(np.concatenate([a, b]), s.std):
        p = 1.0 if s.mean == 0.0 else 0.0
        return Difference(s.n, s.mean, 0.0, s.mean, s.mean, p, s.confidence)
    t = s.mean / (s.std / math.sqrt(s.n))
    p = 2.0 * _t_cdf(-abs(t), s.n - 1)
    return Difference(s.n, s.mean, s.std, s.ci_low, s.ci_high, p, s.confidence)


def equivalence_ratio(a: Sequence[float], b: Sequence[float], margin: float,
                      confidence: float = 0.95) -> Equivalence:
    """Two one-sided tests (TOST) that the paired ratio a/b lies within [1/margin, margin].

    Works on r_i = log a_i − log b_i (a, b > 0), bounds ±log(margin). Standard TOST convention:
    the test level is α = 1 − confidence (0.05 at 95%) and the matching interval is at level
    1 − 2α (90% at 95%), so "equivalent" (TOST p < α) is the same as that interval lying strictly
    inside (1/margin, margin). The estimate and interval are back-transformed to ratios (estimate =
    geometric mean ratio). n < 2: interval and p nan, not equivalent. Zero spread of r: degenerate
    interval at the ratio, p = 0 strictly inside the margin, else 1.
    """
    confidence = _check_confidence(confidence)
    margin = float(margin)
    if not margin > 1.0:
        raise ValueError(f"an equivalence margin must be > 1 (ratios within [1/m, m]), got {margin}")
    a, b = _pair(a, b)
    if np.any(a <= 0) or np.any(b <= 0):
        raise ValueError("ratios need positive values in both samples")
    alpha = 1.0 - confidence
    level = 1.0 - 2.0 * alpha
    if level <= 0.0:
        raise ValueError(f"TOST needs confidence > 0.5 (interval at 1 − 2α), got {confidence}")
    r = np.log(a) - np.log(b)
    n = int(r.size)
    bound = math.log(margin)
    if n == 0:
        return Equivalence(0, NAN, NAN, NAN, level, NAN, False, margin)
    mean = float(r.mean())
    if n < 2:
        return Equivalence(n, math.exp(mean), NAN, NAN, level, NAN, False, margin)
    std = float(r.std(ddof=1))
    if _is_flat(np.concatenate([np.log(a), np.log(b)]), std):
        p = 0.0 if abs(mean) < bound else 1.0
        return Equivalence(n, math.exp(mean), math.exp(mean), math.exp(mean), level, p, p < alpha, margin)
    se = std / math.sqrt(n)
    p_lower = _t_cdf(-(mean + bound) / se, n - 1)  # H0: log ratio ≤ −bound
    p_upper = _t_cdf((mean - bound) / se, n - 1)  # H0: log ratio ≥ +bound
    p = max(p_lower, p_upper)
    half = t_quantile(1.0 - alpha, n - 1) * se
    return Equivalence(n, math.exp(mean), math.exp(mean - half), math.exp(mean + half), level, p, p < alpha, margin)


def _rank_rows(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing the mean of their ranks (scipy.stats.rankdata's
    "average"); x (..., n) → float (..., n)."""
    order = np.argsort(x, axis=-1, kind="stable")
    ordered = np.take_along_axis(x, order, axis=-1)
    n = x.shape[-1]
    position = np.broadcast_to(np.arange(n), x.shape)
    starts = np.ones(x.shape, dtype=bool)  # where a run of equal values begins
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends = np.ones(x.shape, dtype=bool)  # where one ends
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, n - 1), axis=-1), axis=-1), axis=-1)
    ranks = np.empty(x.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=-1)
    return ranks


def _spearman_p_value(rho: float, n: int) -> float:
    """Two-sided p-value of Spearman's rho from n pairs: t = ρ·√((n−2)/(1−ρ²)) on n − 2 degrees of
    freedom, as scipy.stats.spearmanr (p = 0 at |ρ| = 1)."""
    dof = n - 2
    if abs(rho) >= 1.0:
        return 0.0
    t = rho * math.sqrt(dof / ((1.0 + rho) * (1.0 - rho)))
    return 2.0 * _t_cdf(-abs(t), dof)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair; nan where a row is constant."""
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    denom = np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (x * y).sum(axis=-1) / np.where(denom > 0, denom, 1.0), np.nan)


def spearman_bootstrap(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> Correlation:
    """Spearman's rho of paired (x, y) with a percentile-bootstrap interval.

    Pairs are resampled with replacement ``n_boot`` times from ``numpy.random.default_rng(seed)``
    (deterministic given the seed); resamples whose ranks are constant (rho undefined) are dropped.
    Ties get average ranks, as in scipy.stats.spearmanr. n < 3 or a constant input: rho (if
    defined), interval and p-value nan.
    """
    confidence = _check_confidence(confidence)
    x, y = _pair(x, y)
    n = int(x.size)
    if n < 2:
        return Correlation(n, NAN, NAN, NAN, NAN, confidence)
    rho = float(_pearson_rows(_rank_rows(x), _rank_rows(y)))
    if n < 3 or not math.isfinite(rho):
        return Correlation(n, rho, NAN, NAN, NAN, confidence)
    p = _spearman_p_value(rho, n)
    index = np.random.default_rng(seed).integers(0, n, size=(int(n_boot), n))
    boot = _pearson_rows(_rank_rows(x[index]), _rank_rows(y[index]))
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return Correlation(n, rho, NAN, NAN, p, confidence)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return Correlation(n, rho, float(low), float(high), p, confidence)


# --- intervals that respect their range, under a pooled model -----------------------------------

# Proportions of exactly 0 or 1 have no logit: they are moved this far inside (a fraction of the range).
_PROPORTION_CLIP = 1e-4


@dataclass(frozen=True)
class Pooled:
    """Seed-to-seed spread pooled over groups (cells): sd with ``df`` = Σ(n_g − 1) degrees of freedom."""

    sd: float
    df: int


def pooled_spread(groups: Sequence[Sequence[float]]) -> Pooled:
    """Pooled within-group sd, sqrt(Σ (n_g − 1) s_g² / Σ (n_g − 1)), over groups of ≥ 2 values.

    The one-way ANOVA error term: every group may have its own mean, the spread around it is
    assumed common. No group with two values: sd nan, df 0."""
    squares, df = 0.0, 0
    for group in groups:
        x = _as_values(group)
        if x.size >= 2:
            squares += float(((x - x.mean()) ** 2).sum())
            df += int(x.size) - 1
    return Pooled(math.sqrt(squares / df) if df else NAN, df)


def logit(p: np.ndarray | float) -> np.ndarray:
    """log(p / (1 − p)) of proportions in [0, 1], clipped to [1e-4, 1 − 1e-4] so that 0 and 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), _PROPORTION_CLIP, 1.0 - _PROPORTION_CLIP)
    return np.log(p) - np.log1p(-p)


def expit(x: np.ndarray | float) -> np.ndarray:
    """The inverse of :func:`logit`: 1 / (1 + e^−x)."""
    return _special.expit(np.asarray(x, dtype=np.float64))


def logit_interval(center: float, se_logit: float, df: int, confidence: float = 0.95,
                   scale: float = 100.0) -> tuple[float, float]:
    """Student-t interval on the logit scale, back-transformed: (low, high) within [0, scale].

    ``center`` is a proportion on [0, scale] (e.g. a mean accuracy in %), ``se_logit`` the standard
    error of its logit. df < 1 or a nan se: (nan, nan)."""
    confidence = _check_confidence(confidence)
    if df < 1 or not math.isfinite(se_logit):
        return NAN, NAN
    middle = float(logit(center / scale))
    half = t_quantile(0.5 + confidence / 2, df) * se_logit
    return float(scale * expit(middle - half)), float(scale * expit(middle + half))


def t_interval(center: float, se: float, df: int, confidence: float = 0.95) -> tuple[float, float]:
    """center ± t_{df} · se; (nan, nan) when df < 1 or se is nan."""
    confidence = _check_confidence(confidence)
    if df < 1 or not math.isfinite(se):
        return NAN, NAN
    half = t_quantile(0.5 + confidence / 2, df) * se
    return center - half, center + half


def f_survival(f: float, df1: int, df2: int) -> float:
    """P(F > f) for Fisher's F with (df1, df2) degrees of freedom (scipy.stats.f.sf)."""
    return float(_special.fdtrc(df1, df2, f))


# --- multiplicity -------------------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: p_(i) · (m − i + 1), made monotone, capped at 1.

    A claim is rejected at family-wise level α exactly when its adjusted p < α (ties resolved as in
    the step-down procedure). nan p-values (untestable claims) stay nan and do not count in m."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = tested.size
    if m == 0:
        return out.tolist()
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, p[index] * (m - rank)))
        out[index] = running
    return out.tolist()


def holm_levels(p_values: Sequence[float], alpha: float) -> list[float]:
    """The level each claim is compared with in Holm's procedure, α / (m − rank): the smallest p
    meets α/m, the next α/(m − 1), ...; nan for an untestable claim."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    for rank, index in enumerate(order):
        out[index] = alpha / (tested.size - rank)
    return out.tolist()


# --- equivalence of a difference ---------------------------------------------------------------


def equivalence_difference(a: Sequence[float], b: Sequence[float], margin: float,
                           confidence: float = 0.95) -> Equivalence:
    """TOST that the mean paired difference a − b lies within (−margin, margin).

    As :func:`equivalence_ratio` but on the raw scale: interval at level 1 − 2α of the mean
    difference, p the larger one-sided p-value; ``estimate``, ``ci_low``, ``ci_high`` are differences."""
    confidence = _check_confidence(confidence)
    margin = float(margin)
    if not margin > 0.0:
        raise ValueError(f"an equivalence margin of a difference must be > 0, got {margin}")
    a, b = _pair(a, b)
    alpha = 1.0 - confidence
    level = 1.0 - 2.0 * alpha
    if level <= 0.0:
        raise ValueError(f"TOST needs confidence > 0.5 (interval at 1 − 2α), got {confidence}")
    d = a - b
    n = int(d.size)
    if n < 2:
        return Equivalence(n, float(d.mean()) if n else NAN, NAN, NAN, level, NAN, False, margin)
    mean, std = float(d.mean()), float(d.std(ddof=1))
    if _is_flat(np.concatenate([a, b]), std):
        p = 0.0 if abs(mean) < margin else 1.0
        return Equivalence(n, mean, mean, mean, level, p, p < alpha, margin)
    se = std / math.sqrt(n)
    p = max(_t_cdf(-(mean + margin) / se, n - 1), _t_cdf((mean - margin) / se, n - 1))
    half = t_quantile(1.0 - alpha, n - 1) * se
    return Equivalence(n, mean, mean - half, mean + half, level, p, p < alpha, margin)


def outside_margin_p(estimate: float, se: float, df: int, bound: float) -> float:
    """One-sided p of "the effect lies beyond ±bound" on the side of ``estimate``: the test behind a
    TOST claim's "contradicted" (its 1 − 2α interval entirely outside the margin)."""
    if df < 1 or not math.isfinite(se):
        return NAN
    if se <= 0.0:
        return 0.0 if abs(estimate) > bound else 1.0
    return _t_cdf(-(abs(estimate) - bound) / se, df)


# --- how many seeds or tasks would decide a claim ------------------------------------------------


@dataclass(frozen=True)
class Design:
    """Where a paired claim's noise comes from, for its power at other sizes.

    A unit is a task (tasks ≥ 2: its value is the mean over ``seeds`` seeds) or a seed (a single
    task). The variance of one task's mean difference is between_sd² + within_sd² / seeds: the
    difference's real variation across tasks plus the seed-to-seed noise averaged over seeds."""

    within_sd: float  # seed-to-seed sd of a paired difference within a task (pooled over tasks)
    between_sd: float  # sd of the true per-task differences across tasks (0 with a single task)
    seeds: int
    tasks: int

    def standard_error(self) -> tuple[float, int]:
        """(standard error of the mean difference, its degrees of freedom)."""
        if self.tasks >= 2:
            variance = self.between_sd ** 2 + self.within_sd ** 2 / self.seeds
            return math.sqrt(variance / self.tasks), self.tasks - 1
        return self.within_sd / math.sqrt(self.seeds), self.seeds - 1


def _beyond(df: int, ncp: float, critical: float) -> float:
    """P(T' > critical) for the noncentral t with ``df`` and noncentrality ``ncp``. Where scipy's
    series gives no number (large ncp), the normal approximation Φ((ncp − c) / √(1 + c²/2df))."""
    below = float(_special.nctdtr(df, ncp, critical))
    if math.isfinite(below):
        return 1.0 - below
    return float(_special.ndtr((ncp - critical) / math.sqrt(1.0 + critical * critical / (2.0 * df))))


def decision_power(effect: float, design: Design, alpha: float, bound: float | None = None) -> float:
    """Probability that the claim's rule decides it at ``design``'s size when the true effect is ``effect``.

    bound None: the directional rule (two-sided interval at 1 − α excludes 0). With a bound (an
    equivalence margin on the effect's scale): "supported" needs the 1 − 2α interval inside
    (−bound, bound) when |effect| < bound (TOST), "contradicted" needs it beyond the bound otherwise."""
    se, df = design.standard_error()
    if df < 1 or not math.isfinite(se) or not math.isfinite(effect):
        return NAN
    if se <= 0.0:
        return 1.0 if (bound is None and effect != 0.0) or (bound is not None and abs(effect) != bound) else 0.0
    if bound is None:
        critical = t_quantile(1.0 - alpha / 2.0, df)
        return _beyond(df, effect / se, critical) + 1.0 - _beyond(df, effect / se, -critical)
    critical = t_quantile(1.0 - alpha, df)
    if abs(effect) >= bound:
        return _beyond(df, (abs(effect) - bound) / se, critical)
    both = _beyond(df, (effect + bound) / se, critical) + _beyond(df, (bound - effect) / se, critical) - 1.0
    return max(0.0, both)


def size_to_decide(effect: float, design: Design, alpha: float, *, vary: str, bound: float | None = None,
                   power: float = 0.8, cap: int = 1000) -> int | None:
    """The smallest number of seeds (vary="seeds") or tasks (vary="tasks"), above the design's own,
    at which :func:`decision_power` reaches ``power``; None if it does not by ``cap`` (the effect sits
    at the decision boundary: 0 for the directional rule, the margin for an equivalence)."""
    if vary not in ("seeds", "tasks"):
        raise ValueError(f"vary must be 'seeds' or 'tasks', got {vary!r}")
    start = (design.seeds if vary == "seeds" else design.tasks) + 1
    size_of = (lambda k: Design(design.within_sd, design.between_sd, k, design.tasks)) if vary == "seeds" \
        else (lambda k: Design(design.within_sd, design.between_sd, design.seeds, k))
    if not (decision_power(effect, size_of(cap), alpha, bound) >= power):
        return None
    low, high = start, cap  # power grows with size: bisect for the first size that reaches it
    while low < high:
        middle = (low + high) // 2
        if decision_power(effect, size_of(middle), alpha, bound) >= power:
            high = middle
        else:
            low = middle + 1
    return low


# --- repeated looks: alpha spending ------------------------------------------------------------


def obrien_fleming_spent(fraction: float, alpha: float) -> float:
    """Lan–DeMets O'Brien–Fleming-type spending function: α(t) = 2 − 2Φ(z_{1−α/2} / √t).

    The error allowed to be spent by information fraction t ∈ (0, 1] (α(1) = α; tiny early on)."""
    if not 0.0 < fraction:
        return 0.0
    fraction = min(1.0, float(fraction))
    return float(2.0 - 2.0 * _special.ndtr(_special.ndtri(1.0 - alpha / 2.0) / math.sqrt(fraction)))


def look_levels(fractions: Sequence[float], alpha: float) -> list[float]:
    """Each look's test level: the α spent between it and the previous look, α(t_k) − α(t_{k−1}).

    Testing look k at its increment bounds the chance of any false decision over all looks by
    Σ increments = α(t_last) ≤ α (a union bound: it holds whatever the looks' correlation, so it is
    conservative). ``fractions``: information fractions of the looks, increasing."""
    levels, spent = [], 0.0
    for fraction in fractions:
        total = obrien_fleming_spent(fraction, alpha)
        levels.append(max(0.0, total - spent))
        spent = max(spent, total)
    return levels
