"""Claims between families of methods (contrastive, non-contrastive, supervised), paired over tasks.

A family's value on a task, for a seed, is the mean over the family's methods that ran it; the
claims then pair families task by task (seeds averaged within a task) exactly as the paper's
claims pair methods (:mod:`contrastlab.report.claims`), with the same three-outcome rules:

    F1 transfer:   "B pretraining transfers as well as A": probe accuracies within ± accuracy_margin
                   points (TOST on the difference, report.claims.accuracy_margin)
    F2 flatness:   "A and B sit in similarly flat minima": sharpness ratio within [1/m, m] (TOST)
    F3 progress:   "A makes faster progress toward P* than B": t_w AUC, directional
    F4 robustness: "A is more robust to FGSM than B": relative FGSM accuracy AUC, directional

for each pair (A, B) of the families present, in the order contrastive, non-contrastive,
supervised. The random baseline's family is never compared as a family, nor is a method whose
family is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import replace
from itertools import combinations

import numpy as np

from ..stats import equivalence_difference, outside_margin_p
from .claims import (
    CONTRADICTED, EQUIVALENCE, INCONCLUSIVE, NAN, SUPPORTED, Claim, ClaimInputs, ClaimSettings, _difference_row, _missing, _pair, _scalars, _spread, progress_auc, ratio_claim, robustness_score,
)

COMPARED_FAMILIES = ("contrastive", "non-contrastive", "supervised")

__all__ = ["COMPARED_FAMILIES", "equivalence_claim", "family_claims", "family_runs"]

PerRun = dict[str, dict[Hashable, dict[Hashable, float]]]


def family_runs(per_run: Mapping[str, Mapping[Hashable, Mapping[Hashable, float]]],
                families: Mapping[str, str]) -> PerRun:
    """family -> task -> seed -> mean over the family's methods that have that (task, seed).

    ``per_run``: method -> task -> seed -> value (method names lower case, as the claims key them)."""
    sums: dict[str, dict[Hashable, dict[Hashable, list[float]]]] = {}
    for method, tasks in per_run.items():
        family = families.get(method)
        if family not in COMPARED_FAMILIES:
            continue
        for task, seeds in tasks.items():
            for seed, value in seeds.items():
                sums.setdefault(family, {}).setdefault(task, {}).setdefault(seed, []).append(float(value))
    return {f: {t: {s: float(np.mean(v)) for s, v in seeds.items()} for t, seeds in tasks.items()}
            for f, tasks in sums.items()}


def equivalence_claim(claim: str, text: str, statistic: str, per_run: PerRun, pair: tuple[str, str],
                      margin: float, confidence: float) -> Claim:
    """TOST that mean(a − b) lies within ±margin (1 − 2α interval), paired as the claims pair."""
    a, b = pair
    alpha = 1.0 - confidence
    rule = (f"TOST at α = {alpha:g}: supported if the {100 * (1 - 2 * alpha):g}% CI of the difference lies within "
            f"[−{margin:g}, {margin:g}], contradicted if it lies entirely outside, otherwise inconclusive")
    va, vb, unit, note = _pair(per_run, a, b)
    if note:
        return Claim(claim, text, statistic, NAN, NAN, NAN, NAN, 0, "", INCONCLUSIVE, rule, note, test=EQUIVALENCE,
                     margin=margin)
    e = equivalence_difference(va, vb, margin, confidence)
    if e.equivalent:
        verdict = SUPPORTED
    elif e.ci_low > margin or e.ci_high < -margin:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    p = e.p_value
    if e.n >= 2 and abs(e.estimate) >= margin:
        d = np.asarray(va) - np.asarray(vb)
        p = outside_margin_p(float(d.mean()), float(d.std(ddof=1)) / math.sqrt(e.n), e.n - 1, margin)
    within, between, seeds = _spread(per_run, a, b)
    return Claim(claim, text, statistic, e.estimate, e.ci_low, e.ci_high, p, e.n, unit, verdict, rule,
                 "" if e.n >= 2 else "a single pair: no interval", test=EQUIVALENCE, margin=margin,
                 sd_within=within, sd_between=between, seeds_per_task=seeds)


def _present(families: Mapping[str, str], *per_runs: Mapping) -> list[str]:
    """The compared families with at least one method that has results."""
    methods = {m for per_run in per_runs for m in per_run}
    return [f for f in COMPARED_FAMILIES if any(families.get(m) == f for m in methods)]


def _per_run(inputs: ClaimInputs, settings: ClaimSettings) -> dict[str, PerRun]:
    """quantity -> method -> task -> seed -> number, for the four family claims (absent: {})."""
    out: dict[str, PerRun] = {}
    out["accuracy"] = _scalars(inputs.accuracy, float, "probe accuracy") if inputs.accuracy else {}
    out["sharpness"] = _scalars(inputs.sharpness, float, "sharpness") if inputs.sharpness else {}
    progress = (inputs.progress or {}).get("t_w")
    out["progress"] = _scalars(progress, progress_auc, "progress AUC") if progress else {}
    out["robustness"] = {}
    if inputs.robustness:
        try:
            out["robustness"] = _scalars(inputs.robustness, lambda c: robustness_score(c[0], c[1], settings.eps_max),
                                         "robustness score")
        except ValueError:  # the paper's claim 3 already says why the curves cannot be scored
            out["robustness"] = {}
    return out


def family_claims(inputs: ClaimInputs, settings: ClaimSettings) -> list[Claim]:
    """The four family claims for every pair of families present (see the module docstring)."""
    families = {str(m).lower(): f for m, f in (inputs.families or {}).items()}
    per_run = _per_run(inputs, settings)
    present = _present(families, *per_run.values())
    if len(present) < 2:
        return []
    by_family = {k: family_runs(v, families) for k, v in per_run.items()}
    confidence, budget = settings.confidence, f"ε ∈ [0, {settings.eps_max * 255:.4g}/255] in {settings.attack_space} space"
    rows: list[Claim] = []
    for letter, (a, b) in zip("abcdefgh", combinations(present, 2)):
        rows.append(equivalence_claim(
            f"F1{letter}", f"{b} pretraining transfers as well as {a} (probe accuracy within "
            f"±{settings.accuracy_margin:g} points)", f"probe accuracy, {b} − {a} (points)",
            by_family["accuracy"], (b, a), settings.accuracy_margin, confidence))
        rows.append(_family_ratio(f"F2{letter}", (a, b), by_family["sharpness"], inputs.sharpness_quantity, settings))
        rows.append(_difference_row(f"F3{letter}", f"{a} makes faster progress toward P* than {b} (t_w AUC)",
                                    f"AUC of t_w (epoch-normalized), {a} − {b}", by_family["progress"], a, b,
                                    confidence))
        rows.append(_difference_row(f"F4{letter}", f"{a} is more robust to FGSM than {b} ({budget})",
                                    f"relative FGSM accuracy AUC over {budget}, {a} − {b}", by_family["robustness"],
                                    a, b, confidence))
    return rows


def _family_ratio(claim: str, pair: tuple[str, str], per_run: PerRun, quantity: str,
                  settings: ClaimSettings) -> Claim:
    a, b = pair
    margin, alpha = settings.margin, 1.0 - settings.confidence
    text = f"{a} and {b} sit in similarly flat minima ({quantity})"
    rule = (f"TOST at α = {alpha:g}: supported if the {100 * (1 - 2 * alpha):g}% CI of the sharpness ratio lies "
            f"within [1/{margin:g}, {margin:g}], contradicted if it lies entirely outside, otherwise inconclusive")
    va, vb, unit, note = _pair(per_run, a, b)
    if note:
        return _missing(claim, text, note, rule)
    row = ratio_claim(claim, text, f"sharpness ratio {a}/{b} (geometric mean)", (va, vb, unit), margin,
                      settings.confidence, rule)
    within, between, seeds = _spread(per_run, a, b, log=True)
    return replace(row, sd_within=within, sd_between=between, seeds_per_task=seeds)


