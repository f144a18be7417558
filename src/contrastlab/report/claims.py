"""The original paper's three claims, each tested on a study's own numbers with three outcomes.

Pure functions over plain Python data (no files, no study or training imports). Each claim
becomes one or more :class:`Claim` rows whose ``verdict`` is "supported", "contradicted" or
"inconclusive", with the decision rule written out in ``rule``.

    flatness_claims(sharpness, *, quantity, margin=2.0, confidence=0.95) -> list[Claim]        # claim 1
    progress_claims(progress, *, formula, confidence=0.95) -> list[Claim]                      # claim 2
    robustness_claims(curves, *, attack_space, eps_max, confidence=0.95) -> list[Claim]        # claim 3
    robustness_score(eps, accuracy, eps_max) -> float
    progress_auc(t_w) -> float
    claims_rows(*, sharpness=None, sharpness_quantity=..., progress=None, robustness=None,
                attack_space="pixel", confidence=0.95, margin=2.0, eps_max=8/255) -> list[dict]

Inputs are keyed by (method, task): method names are matched case-insensitively ("simclr",
"supcon", "supce"; anything else, e.g. "random", is ignored); a task key is anything hashable
(a name or a tuple of classes). Per run values are keyed by seed (a plain list counts as seeds
0, 1, 2, ... in order).

Pairing (the ``unit`` column): when both methods have results on at least two common tasks, the
unit is a task and its value is the mean over that method's seeds on the task, so that the
tests ask whether the difference holds across tasks. With a single common task, the unit is a
seed, paired by seed key (seeds present for both methods). Where a method, a task in common or
a seed in common is missing, the row stays, with verdict "inconclusive", n = 0, nan numbers
and ``note`` saying what is missing: a claim that could not be tested is shown, not hidden.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np

from ..stats import (
    Design, equivalence_ratio, f_survival, holm, holm_levels, outside_margin_p, paired_difference, pooled_spread, size_to_decide,
    t_quantile,
)

__all__ = [
    "Claim", "ClaimInputs", "ClaimSettings", "METHODS", "VERDICTS", "decide_sizes", "decide_together", "paper_claims",
    "flatness_claims", "progress_auc", "progress_claims", "ratio_claim", "robustness_claims", "robustness_score",
]

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
SIMCLR, SUPCON, SUPCE = "simclr", "supcon", "supce"
DIRECTIONAL, RATIO, EQUIVALENCE, DERIVED = "directional", "ratio", "equivalence", "derived"
NOT_DECIDABLE = "not decidable at this effect"
NOT_BY_SEEDS = "not by seeds alone"
METHODS = (SIMCLR, SUPCON, SUPCE)
_DISPLAY = {SIMCLR: "SimCLR", SUPCON: "SupCon", SUPCE: "SupCE"}
NAN = float("nan")

# How the two progress formulas are named in the rows' text.
FORMULA_LABELS = {
    "t_w": "t_w (√p in the Bhattacharyya term, the correct formula)",
    "t_w_raw": "t_w_raw (raw p in the Bhattacharyya term, as the original plots)",
}

Key = tuple[str, Hashable]


@dataclass(frozen=True)
class Claim:
    """One tested statement: the statistic, its interval and the verdict under ``rule``."""

    claim: str  # "1", "1a", "2a", ...
    text: str  # the claim in words, naming the quantity used
    statistic: str  # what estimate / ci_low / ci_high are
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int  # number of pairs behind the statistic
    unit: str  # "tasks" or "seeds" (what a pair is); "" when nothing could be paired
    verdict: str  # "supported" | "contradicted" | "inconclusive"
    rule: str  # the decision rule in words
    note: str = ""  # what is missing, when something is
    p_adjusted: float = NAN  # p_value adjusted for the claims tested together (Holm), = p_value without
    level: float = NAN  # the test level the verdict was decided at (Holm's step, a look's spent α)
    seeds_to_decide: str = ""  # an inconclusive claim: seeds per task at which the rule likely decides it
    tasks_to_decide: str = ""  # ... and tasks (at the current seeds); see :func:`decide_sizes`
    test: str = DIRECTIONAL  # "directional", "ratio" (TOST on a ratio), "equivalence" (TOST on a difference), "derived"
    margin: float = NAN  # the equivalence margin (a ratio, or a difference in the estimate's unit)
    sd_within: float = NAN  # seed-to-seed sd of a paired difference within a task (log scale for ratios)
    sd_between: float = NAN  # sd of the true per-task differences (0 with one task)
    seeds_per_task: float = NAN  # seeds behind each task's value (harmonic mean over tasks)


# --- pairing ----------------------------------------------------------------------------------


def _per_seed(values) -> dict[Hashable, object]:
    return dict(values) if isinstance(values, Mapping) else dict(enumerate(values))


def _by_method(data: Mapping[Key, object]) -> dict[str, dict[Hashable, dict[Hashable, object]]]:
    """method (lower case) -> task -> seed -> value, tasks in order of first appearance."""
    out: dict[str, dict[Hashable, dict[Hashable, object]]] = {}
    for (method, task), runs in data.items():
        runs = _per_seed(runs)
        if runs:
            out.setdefault(str(method).lower(), {}).setdefault(task, {}).update(runs)
    return out


def _pair(per_run: Mapping[str, Mapping[Hashable, Mapping[Hashable, float]]], a: str, b: str):
    """(values of a, values of b, unit, note): paired per task (≥ 2 common tasks) or per seed."""
    missing = [_DISPLAY.get(m, m) for m in (a, b) if not per_run.get(m)]
    if missing:
        return None, None, "", f"no results for {' and '.join(missing)}"
    common = [t for t in per_run[a] if t in per_run[b]]
    if not common:
        return None, None, "", f"no task with results for both {_DISPLAY.get(a, a)} and {_DISPLAY.get(b, b)}"
    if len(common) >= 2:
        va = [float(np.mean(list(per_run[a][t].values()))) for t in common]
        vb = [float(np.mean(list(per_run[b][t].values()))) for t in common]
        return np.array(va), np.array(vb), "tasks", ""
    task = common[0]
    seeds = [s for s in per_run[a][task] if s in per_run[b][task]]
    if not seeds:
        return None, None, "", f"no seed with results for both {_DISPLAY.get(a, a)} and {_DISPLAY.get(b, b)} on task {task}"
    va = [float(per_run[a][task][s]) for s in seeds]
    vb = [float(per_run[b][task][s]) for s in seeds]
    return np.array(va), np.array(vb), "seeds", ""


def _spread(per_run, a: str, b: str, log: bool = False) -> tuple[float, float, float]:
    """(sd_within, sd_between, seeds_per_task) of the paired difference a − b (of logs with ``log``).

    Within a task, the differences of seeds both methods ran give the seed-to-seed sd (pooled over
    tasks). Over ≥ 2 tasks, the task means' variance S² is between² + within²/seeds, so the
    between-task sd is what remains of S² once the seed noise is taken out (at least 0)."""
    f = np.log if log else np.asarray
    common = [t for t in per_run.get(a, {}) if t in per_run.get(b, {})]
    groups, means, counts = [], [], []
    for task in common:
        seeds = [s for s in per_run[a][task] if s in per_run[b][task]]
        if seeds:
            d = f(np.array([per_run[a][task][s] for s in seeds], dtype=np.float64)) \
                - f(np.array([per_run[b][task][s] for s in seeds], dtype=np.float64))
            groups.append(d)
            counts.append(len(seeds))
            means.append(float(f(np.mean([per_run[a][task][s] for s in per_run[a][task]]))
                               - f(np.mean([per_run[b][task][s] for s in per_run[b][task]]))))
    if not groups:
        return NAN, NAN, NAN
    within = pooled_spread(groups).sd
    seeds = len(counts) / sum(1.0 / c for c in counts)
    if len(groups) < 2:
        return within, 0.0, seeds
    task_variance = float(np.var(means, ddof=1))
    noise = within ** 2 / seeds if math.isfinite(within) else 0.0
    if noise > 0 and not task_variation_shows(task_variance / noise, len(groups) - 1, pooled_spread(groups).df):
        return within, 0.0, seeds  # no evidence of real variation across tasks: all of it is seed noise
    return within, math.sqrt(max(0.0, task_variance - noise)), seeds


# The between-task variance is estimated only when an F test of it has p below this ("sometimes
# pool"): a variance component from a few tasks is so noisy that, estimated blindly, it often says
# that no number of seeds can decide a claim which a few more seeds would.
_TASK_VARIATION_P = 0.25


def task_variation_shows(ratio: float, df_tasks: int, df_seeds: int) -> bool:
    """Whether the task means vary more than their seed noise allows (F test at _TASK_VARIATION_P)."""
    if df_tasks < 1 or df_seeds < 1 or not math.isfinite(ratio):
        return True
    return f_survival(ratio, df_tasks, df_seeds) < _TASK_VARIATION_P


def _percent(level: float) -> str:
    return f"{100 * level:g}%"


def _directional_rule(confidence: float) -> str:
    return (f"supported if the {_percent(confidence)} CI of the mean paired difference lies entirely above 0, "
            f"contradicted if it lies entirely below 0, otherwise inconclusive")


def _directional_verdict(ci_low: float, ci_high: float) -> str:
    if ci_low > 0:  # nan compares False: an undefined interval is inconclusive
        return SUPPORTED
    if ci_high < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def _difference_row(claim: str, text: str, statistic: str, per_run, a: str, b: str, confidence: float) -> Claim:
    """Directional test of mean(a − b) > 0 on the paired per-run values."""
    rule = _directional_rule(confidence)
    va, vb, unit, note = _pair(per_run, a, b)
    if note:
        return Claim(claim, text, statistic, NAN, NAN, NAN, NAN, 0, "", INCONCLUSIVE, rule, note)
    d = paired_difference(va, vb, confidence)
    note = "" if d.n >= 2 else "a single pair: no interval"
    within, between, seeds = _spread(per_run, a, b)
    return Claim(claim, text, statistic, d.estimate, d.ci_low, d.ci_high, d.p_value, d.n, unit,
                 _directional_verdict(d.ci_low, d.ci_high), rule, note, sd_within=within, sd_between=between,
                 seeds_per_task=seeds)


def _scalars(data: Mapping[Key, Mapping[Hashable, object]], score, what: str):
    """Apply ``score`` to every run: method -> task -> seed -> float; errors name the run."""
    out: dict[str, dict[Hashable, dict[Hashable, float]]] = {}
    for method, tasks in _by_method(data).items():
        for task, runs in tasks.items():
            for seed, value in runs.items():
                try:
                    result = float(score(value))
                except ValueError as error:
                    raise ValueError(f"{what} of {method} on task {task}, seed {seed}: {error}") from None
                out.setdefault(method, {}).setdefault(task, {})[seed] = result
    return out


# --- claim 1: flatness ------------------------------------------------------------------------


def flatness_claims(sharpness: Mapping[Key, Sequence[float] | Mapping[Hashable, float]], *, quantity: str,
                    margin: float = 2.0, confidence: float = 0.95) -> list[Claim]:
    """Claim 1, "after fine-tuning, all three methods sit in similarly flat minima".

    ``sharpness``: (method, task) -> per-seed sharpness values (positive; e.g. the top Hessian
    eigenvalue), ``quantity`` names them in the text. For each pair of methods (rows 1a-1c) a
    paired TOST on log sharpness ratios (:func:`contrastlab.stats.equivalence_ratio`: interval at
    level 1 − 2α, α = 1 − confidence): the pair is "supported" if the ratio's interval lies within
    [1/margin, margin], "contradicted" if it lies entirely outside, else "inconclusive". Row "1"
    combines them: supported if every pair is, contradicted if some pair is, else inconclusive;
    its numbers are those of the deciding pair (a contradicting pair, else the pair whose interval
    reaches farthest from 1) and its p-value is the intersection-union TOST p (largest over pairs).
    """
    alpha = 1.0 - confidence
    level = _percent(1.0 - 2.0 * alpha)
    pair_rule = (f"TOST at α = {alpha:g}: supported if the {level} CI of the sharpness ratio lies within "
                 f"[1/{margin:g}, {margin:g}], contradicted if it lies entirely outside, otherwise inconclusive")
    all_rule = (f"supported if every pair's {level} CI of the sharpness ratio lies within [1/{margin:g}, {margin:g}], "
                f"contradicted if some pair's CI lies entirely outside it, otherwise inconclusive")
    text = f"after fine-tuning, SimCLR, SupCon and SupCE sit in similarly flat minima ({quantity})"
    per_run = {m: {t: {s: float(v) for s, v in runs.items()} for t, runs in tasks.items()}
               for m, tasks in _by_method(sharpness).items()}
    rows, pairs = [], []
    for letter, (a, b) in zip("abc", combinations(METHODS, 2)):
        statistic = f"sharpness ratio {_DISPLAY[a]}/{_DISPLAY[b]} (geometric mean)"
        pair_text = f"{_DISPLAY[a]} and {_DISPLAY[b]} sit in similarly flat minima ({quantity})"
        va, vb, unit, note = _pair(per_run, a, b)
        if note:
            rows.append(Claim(f"1{letter}", pair_text, statistic, NAN, NAN, NAN, NAN, 0, "", INCONCLUSIVE,
                              pair_rule, note))
            continue
        row = ratio_claim(f"1{letter}", pair_text, statistic, (va, vb, unit), margin, confidence, pair_rule)
        within, between, seeds = _spread(per_run, a, b, log=True)
        row = replace(row, sd_within=within, sd_between=between, seeds_per_task=seeds)
        rows.append(row)
        pairs.append(row)
    rows.insert(0, _flatness_overall(text, all_rule, rows, pairs))
    return rows


def ratio_claim(claim: str, text: str, statistic: str, paired, margin: float, confidence: float, rule: str) -> Claim:
    """A TOST row on paired positive values (va, vb, unit): supported if the ratio's 1 − 2α interval
    lies within [1/margin, margin], contradicted if entirely outside, else inconclusive. Its p-value is
    the test of the verdict the estimate leans to: TOST inside the margin, "beyond it" outside."""
    va, vb, unit = paired
    e = equivalence_ratio(va, vb, margin, confidence)
    if e.equivalent:
        verdict = SUPPORTED
    elif e.ci_low > margin or e.ci_high < 1.0 / margin:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    p = e.p_value
    if e.n >= 2 and abs(math.log(e.estimate)) >= math.log(margin):
        r = np.log(va) - np.log(vb)
        p = outside_margin_p(float(r.mean()), float(r.std(ddof=1)) / math.sqrt(e.n), e.n - 1, math.log(margin))
    return Claim(claim, text, statistic, e.estimate, e.ci_low, e.ci_high, p, e.n, unit, verdict, rule,
                 "" if e.n >= 2 else "a single pair: no interval", test=RATIO, margin=margin)


def _flatness_overall(text: str, rule: str, rows: list[Claim], pairs: list[Claim]) -> Claim:
    missing = "; ".join(r.note for r in rows if r.n == 0)
    verdicts = [r.verdict for r in rows]
    if CONTRADICTED in verdicts:
        verdict = CONTRADICTED
        decisive = max((r for r in pairs if r.verdict == CONTRADICTED), key=lambda r: abs(math.log(r.estimate)))
    else:
        verdict = SUPPORTED if verdicts == [SUPPORTED] * 3 else INCONCLUSIVE
        decisive = max(pairs, default=None, key=lambda r: max(abs(math.log(r.ci_low)), abs(math.log(r.ci_high)))
                       if math.isfinite(r.ci_low) else math.inf)
    if decisive is None:
        return Claim("1", text, "sharpness ratio, deciding pair", NAN, NAN, NAN, NAN, 0, "", INCONCLUSIVE, rule,
                     missing, test=DERIVED)
    p = max(r.p_value for r in pairs) if len(pairs) == 3 else NAN
    statistic = f"{decisive.statistic}, deciding pair"
    return Claim("1", text, statistic, decisive.estimate, decisive.ci_low, decisive.ci_high, p, decisive.n,
                 decisive.unit, verdict, rule, missing, test=DERIVED, margin=decisive.margin)


# --- claim 2: progress ------------------------------------------------------------------------


def progress_auc(t_w: Sequence[float]) -> float:
    """Area under a t_w curve over probe epochs 0..E (trapezoid, unit epoch spacing) divided by E:
    the average progress over fine-tuning, in [0, 1] when t_w is."""
    t = np.asarray(t_w, dtype=np.float64).reshape(-1)
    if t.size < 2:
        raise ValueError(f"a progress curve needs at least 2 snapshots (epochs 0..E), got {t.size}")
    if not np.all(np.isfinite(t)):
        raise ValueError("t_w has non-finite values")
    return float((t[:-1] + t[1:]).sum() / 2.0 / (t.size - 1))


def _final(t_w: Sequence[float]) -> float:
    t = np.asarray(t_w, dtype=np.float64).reshape(-1)
    if t.size < 1 or not math.isfinite(t[-1]):
        raise ValueError("t_w has no finite final value")
    return float(t[-1])


def progress_claims(progress: Mapping[Key, Mapping[Hashable, Sequence[float]]], *, formula: str,
                    confidence: float = 0.95) -> list[Claim]:
    """Claim 2, "SimCLR makes faster progress toward P* than SupCE and ends closer; SupCon is slowest".

    ``progress``: (method, task) -> seed -> t_w per probe epoch (epochs 0..E) for one formula;
    ``formula`` names it ("t_w" or "t_w_raw"; see FORMULA_LABELS). Rows, each a paired difference
    oriented so that a positive value agrees with the claim, with the directional rule:
    2a AUC SimCLR − SupCE (faster), 2b final t_w SimCLR − SupCE (ends closer), 2c AUC SimCLR −
    SupCon and 2d AUC SupCE − SupCon (SupCon slowest needs both 2c and 2d). AUC = :func:`progress_auc`.
    """
    label = FORMULA_LABELS.get(formula, formula)
    auc = _scalars(progress, progress_auc, "progress AUC")
    final = _scalars(progress, _final, "final t_w")
    specs = [
        ("2a", f"SimCLR makes faster progress toward P* than SupCE; {label}", "AUC", auc, SIMCLR, SUPCE),
        ("2b", f"SimCLR ends closer to P* than SupCE; {label}", "final t_w", final, SIMCLR, SUPCE),
        ("2c", f"SupCon is slowest toward P*: slower than SimCLR; {label}", "AUC", auc, SIMCLR, SUPCON),
        ("2d", f"SupCon is slowest toward P*: slower than SupCE; {label}", "AUC", auc, SUPCE, SUPCON),
    ]
    rows = []
    for claim, text, what, per_run, a, b in specs:
        statistic = f"{what} of {formula} ({'epoch-normalized' if what == 'AUC' else 'last epoch'}), " \
                    f"{_DISPLAY[a]} − {_DISPLAY[b]}"
        rows.append(_difference_row(claim, text, statistic, per_run, a, b, confidence))
    return rows


# --- claim 3: robustness ----------------------------------------------------------------------


def robustness_score(eps: Sequence[float], accuracy: Sequence[float], eps_max: float) -> float:
    """Area under accuracy-vs-ε over [0, eps_max] (trapezoid) divided by eps_max × clean accuracy.

    ε in fractions of 1 (pixel space: 8/255, not 8). The curve must include ε = 0 (the clean
    accuracy) and reach eps_max; a value at eps_max that is not a grid point is interpolated
    linearly. 1 = no loss of accuracy under attack, 0 = everything lost at once.
    """
    eps_max = float(eps_max)
    if not 0.0 < eps_max <= 1.0:
        raise ValueError(f"eps_max is a fraction of the pixel range (e.g. 8/255), got {eps_max}")
    e = np.asarray(eps, dtype=np.float64).reshape(-1)
    acc = np.asarray(accuracy, dtype=np.float64).reshape(-1)
    if e.shape != acc.shape or e.size < 2:
        raise ValueError(f"need matching ε and accuracy arrays of length ≥ 2, got {e.size} and {acc.size}")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(acc))):
        raise ValueError("ε or accuracy has non-finite values")
    order = np.argsort(e, kind="stable")
    e, acc = e[order], acc[order]
    if np.any(np.diff(e) == 0):
        raise ValueError("ε values repeat")
    if e[0] != 0.0:
        raise ValueError(f"the curve has no clean accuracy (ε = 0); it starts at ε = {e[0] * 255:.4g}/255")
    tolerance = 1e-9  # ε grids are written as k/255 in floating point
    if e[-1] < eps_max - tolerance:
        raise ValueError(f"the curve stops at ε = {e[-1] * 255:.4g}/255, short of eps_max = {eps_max * 255:.4g}/255")
    clean = acc[0]
    if clean <= 0:
        raise ValueError("clean accuracy is 0: robustness relative to it is undefined")
    inside = e < eps_max - tolerance
    grid = np.append(e[inside], eps_max)
    values = np.append(acc[inside], np.interp(eps_max, e, acc))
    area = float(((values[:-1] + values[1:]) / 2.0 * np.diff(grid)).sum())
    return area / (eps_max * clean)


def robustness_claims(curves: Mapping[Key, Mapping[Hashable, tuple[Sequence[float], Sequence[float]]]], *,
                      attack_space: str, eps_max: float, confidence: float = 0.95) -> list[Claim]:
    """Claim 3, "SimCLR is more robust to FGSM than SupCE and SupCon".

    ``curves``: (method, task) -> seed -> (ε array, accuracy array) of FGSM; ``attack_space``
    names where ε applies ("pixel", or "normalized" for the original's variant); ``eps_max`` in
    fractions of 1 (the config's ``robustness_eps_max_255 / 255``). Per run the score is
    :func:`robustness_score`; rows 3a SimCLR − SupCE and 3b SimCLR − SupCon, directional rule.
    A run whose curve does not reach eps_max is a ValueError naming the run.
    """
    score = _scalars(curves, lambda curve: robustness_score(curve[0], curve[1], eps_max), "robustness score")
    budget = f"ε ∈ [0, {eps_max * 255:.4g}/255] in {attack_space} space"
    rows = []
    for claim, other in (("3a", SUPCE), ("3b", SUPCON)):
        text = f"SimCLR is more robust to FGSM than {_DISPLAY[other]} ({budget})"
        statistic = f"relative FGSM accuracy AUC over {budget}, SimCLR − {_DISPLAY[other]}"
        rows.append(_difference_row(claim, text, statistic, score, SIMCLR, other, confidence))
    return rows


# --- deciding together: multiplicity, sizes to decide --------------------------------------------

ADJUSTMENTS = ("holm", "none")


def _decided(row: Claim, p_adjusted: float, level: float, alpha: float, own_alpha: float) -> Claim:
    """``row`` decided by its adjusted p at family level ``alpha``, its interval redrawn at ``level``
    (``own_alpha``: the level it was computed at)."""
    verdict = INCONCLUSIVE
    if p_adjusted < alpha:
        if row.test == DIRECTIONAL:
            verdict = SUPPORTED if row.estimate > 0 else CONTRADICTED
        else:
            centre = math.log(row.estimate) if row.test == RATIO else row.estimate
            bound = math.log(row.margin) if row.test == RATIO else row.margin
            verdict = SUPPORTED if abs(centre) < bound else CONTRADICTED
    low, high = _interval_at(row, level, own_alpha)
    return replace(row, p_adjusted=p_adjusted, level=level, verdict=verdict, ci_low=low, ci_high=high)


def _interval_at(row: Claim, level: float, own_alpha: float) -> tuple[float, float]:
    """The row's interval for test level ``level`` instead of ``own_alpha``: the same t-interval with
    its half-width rescaled by the ratio of t quantiles (two-sided for a directional row, one-sided for
    a TOST row's 1 − 2α interval; on the log scale for a ratio)."""
    if row.n < 2 or not (math.isfinite(row.ci_low) and math.isfinite(row.ci_high)) or not math.isfinite(level):
        return row.ci_low, row.ci_high
    df = row.n - 1
    if row.test == DIRECTIONAL:
        scale = t_quantile(1.0 - level / 2.0, df) / t_quantile(1.0 - own_alpha / 2.0, df)
    else:
        scale = t_quantile(1.0 - level, df) / t_quantile(1.0 - own_alpha, df)
    low, high = (math.log(row.ci_low), math.log(row.ci_high)) if row.test == RATIO else (row.ci_low, row.ci_high)
    centre, half = (low + high) / 2.0, (high - low) / 2.0 * scale
    if row.test == RATIO:
        return math.exp(centre - half), math.exp(centre + half)
    return centre - half, centre + half


def decide_sizes(row: Claim, alpha: float, power: float = 0.8) -> tuple[str, str]:
    """(seeds_to_decide, tasks_to_decide) of an inconclusive row: the smallest seeds per task (tasks
    at the current seeds) at which the same rule, at test level ``alpha``, decides it with ``power``
    if the observed effect and spreads are the truth. "" for a decided or untestable row;
    :data:`NOT_DECIDABLE` where the effect sits at the rule's boundary (0, or the margin), so that no
    size decides it; :data:`NOT_BY_SEEDS` where the spread across tasks leaves seeds too little to do."""
    if row.verdict != INCONCLUSIVE or row.n < 2 or row.test == DERIVED or not math.isfinite(row.sd_within):
        return "", ""
    effect = math.log(row.estimate) if row.test == RATIO else row.estimate
    bound = None if row.test == DIRECTIONAL else (math.log(row.margin) if row.test == RATIO else row.margin)
    tasks = row.n if row.unit == "tasks" else 1
    seeds = row.n if tasks == 1 else max(2, int(round(row.seeds_per_task)))
    design = Design(row.sd_within, row.sd_between if tasks >= 2 else 0.0, seeds, tasks)
    by_seeds = size_to_decide(effect, design, alpha, vary="seeds", bound=bound, power=power)
    if tasks < 2:
        return (str(by_seeds) if by_seeds is not None else NOT_DECIDABLE), "unknown with one task"
    by_tasks = size_to_decide(effect, design, alpha, vary="tasks", bound=bound, power=power)
    if by_tasks is None:
        return NOT_DECIDABLE, NOT_DECIDABLE
    return (str(by_seeds) if by_seeds is not None else NOT_BY_SEEDS), str(by_tasks)


def is_tested(test: str, p_value: float) -> bool:
    """Whether a row is a hypothesis of the family: a p-value of its own (not derived from other rows)."""
    return test != DERIVED and math.isfinite(p_value)


def decide_together(rows: list[Claim], *, alpha: float, own_alpha: float, adjust: str = "holm",
                    earlier: tuple[tuple[str, str, str, int, int], ...] = ()) -> list[Claim]:
    """The rows' verdicts decided as one family at level ``alpha``.

    Every testable row (a p-value, not derived) is one hypothesis: with adjust="holm" its p-value
    is Holm-adjusted over them (``p_adjusted``) and the verdict needs p_adjusted < alpha; its interval
    is redrawn at its Holm step's level α/(m − rank) so that it agrees with the verdict. With "none",
    each row at ``alpha``. Derived rows (claim 1 over its pairs) are re-derived; inconclusive rows
    get their seeds and tasks to decide, at the level the next rejection would need. A row an
    ``earlier`` look decided keeps that verdict (see :class:`ClaimSettings`)."""
    if adjust not in ADJUSTMENTS:
        raise ValueError(f"adjust must be one of {', '.join(ADJUSTMENTS)}, got {adjust!r}")
    tested = [i for i, r in enumerate(rows) if is_tested(r.test, r.p_value)]
    p = [rows[i].p_value for i in tested]
    adjusted = holm(p) if adjust == "holm" else p
    levels = holm_levels(p, alpha) if adjust == "holm" else [alpha] * len(p)
    out = list(rows)
    for i, p_adj, level in zip(tested, adjusted, levels):
        out[i] = _decided(rows[i], p_adj, level, alpha, own_alpha)
    rejected = sum(out[i].verdict != INCONCLUSIVE for i in tested)
    next_level = alpha / max(1, len(tested) - rejected) if adjust == "holm" else alpha
    for i in tested:
        seeds, tasks = decide_sizes(out[i], next_level)
        out[i] = replace(out[i], seeds_to_decide=seeds, tasks_to_decide=tasks)
    return _rederive(_keep_earlier(out, tested, earlier))


def _keep_earlier(rows: list[Claim], tested: list[int], earlier: tuple[tuple[str, str, str, int, int], ...]) -> list[Claim]:
    """``rows`` with the verdicts earlier looks reached put back (the first look's, with a note)."""
    first: dict[tuple[str, str], tuple[str, int, int]] = {}
    for claim, statistic, verdict, look, seeds in sorted(earlier, key=lambda e: e[3]):
        first.setdefault((claim, statistic), (verdict, look, seeds))
    out = list(rows)
    for i in tested:
        kept = first.get((rows[i].claim, rows[i].statistic))
        if kept is not None:
            verdict, look, seeds = kept
            note = f"{verdict} at look {look} ({seeds} seeds): a sequential verdict stands; the estimate is this look's"
            out[i] = replace(rows[i], verdict=verdict, seeds_to_decide="", tasks_to_decide="",
                             note="; ".join(n for n in (rows[i].note, note) if n))
    return out


def _rederive(rows: list[Claim]) -> list[Claim]:
    """Claim 1 again from its decided pairs (1a-1c): the same rule, the largest adjusted p (IUT)."""
    pairs = [r for r in rows if r.claim in ("1a", "1b", "1c")]
    out = []
    for row in rows:
        if row.claim == "1" and row.test == DERIVED and pairs:
            tested = [r for r in pairs if r.n > 0]
            derived = _flatness_overall(row.text, row.rule, pairs, tested)
            p_adjusted = max(r.p_adjusted for r in tested) if len(tested) == 3 else NAN
            undecided = [r.seeds_to_decide for r in pairs if r.verdict == INCONCLUSIVE]
            row = replace(derived, p_adjusted=p_adjusted, seeds_to_decide=_largest(undecided),
                          tasks_to_decide=_largest([r.tasks_to_decide for r in pairs if r.verdict == INCONCLUSIVE]))
        out.append(row)
    return out


def _largest(sizes: list[str]) -> str:
    """The largest of several sizes to decide; a text (not decidable, unknown) wins over any number."""
    texts = [s for s in sizes if s and not s.isdigit()]
    if texts:
        return texts[0]
    numbers = [int(s) for s in sizes if s.isdigit()]
    return str(max(numbers)) if numbers else ""


# --- all claims -------------------------------------------------------------------------------


def _missing(claim: str, text: str, note: str, rule: str) -> Claim:
    return Claim(claim, text, "", NAN, NAN, NAN, NAN, 0, "", INCONCLUSIVE, rule, note)


@dataclass(frozen=True)
class ClaimSettings:
    """How the claims are tested (report.claims in the config, and the report's confidence)."""

    confidence: float = 0.95  # each interval's level before any adjustment
    margin: float = 2.0  # flatness: sharpness ratios within [1/margin, margin]
    accuracy_margin: float = 1.0  # families' transfer: probe accuracies within ± this many points
    eps_max: float = 8 / 255  # FGSM budget of the robustness score
    attack_space: str = "pixel"
    adjust: str = "holm"  # "holm" or "none"
    look_alpha: float | None = None  # a sequential look's spent α; None: 1 − confidence
    # Verdicts an earlier look of a sequential study reached: (claim, statistic, verdict, look, seeds).
    # A decision stands once its boundary is crossed (the error bound counts a false verdict at any look).
    earlier: tuple[tuple[str, str, str, int, int], ...] = ()

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence if self.look_alpha is None else float(self.look_alpha)


@dataclass
class ClaimInputs:
    """A run's per-seed results, as the claims need them (see the module docstring for the keys)."""

    sharpness: Mapping | None = None  # (method, task) -> seed -> sharpness (positive)
    sharpness_quantity: str = "top Hessian eigenvalue"
    progress: Mapping[str, Mapping] | None = None  # "t_w" / "t_w_raw" -> (method, task) -> seed -> t_w per epoch
    robustness: Mapping | None = None  # (method, task) -> seed -> (ε, accuracy) of FGSM
    accuracy: Mapping | None = None  # (method, task) -> seed -> probe accuracy (%), for the families
    families: Mapping[str, str] | None = None  # method -> family; None: no family claims


def paper_claims(inputs: ClaimInputs, settings: ClaimSettings) -> list[Claim]:
    """The paper's claims (:func:`flatness_claims`, :func:`progress_claims` per formula,
    :func:`robustness_claims`), not yet decided together. A claim whose input is None gets one
    "inconclusive" row saying that its results are missing."""
    confidence, margin = settings.confidence, settings.margin
    rows: list[Claim] = []
    directional = _directional_rule(confidence)
    if inputs.sharpness is None:
        rows.append(_missing("1", "after fine-tuning, all three methods sit in similarly flat minima",
                             "no sharpness results", f"ratio CIs within [1/{margin:g}, {margin:g}]"))
    else:
        rows += flatness_claims(inputs.sharpness, quantity=inputs.sharpness_quantity, margin=margin,
                                confidence=confidence)
    if not inputs.progress:
        rows.append(_missing("2", "SimCLR makes faster progress toward P* than SupCE and ends closer; "
                                  "SupCon is slowest", "no progress (t_w) results", directional))
    else:
        for formula, data in inputs.progress.items():
            rows += progress_claims(data, formula=formula, confidence=confidence)
    if inputs.robustness is None:
        rows.append(_missing("3", "SimCLR is more robust to FGSM than SupCE and SupCon", "no FGSM results",
                             directional))
    else:
        rows += robustness_claims(inputs.robustness, attack_space=settings.attack_space, eps_max=settings.eps_max,
                                  confidence=confidence)
    return rows
