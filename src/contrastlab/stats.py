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


def _t_quantile(q: float, df: int) -> float:
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
    half = _t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
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
    half = _t_quantile(1.0 - alpha, n - 1) * se
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
