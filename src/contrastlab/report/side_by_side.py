"""Two versions of one quantity side by side, per method, with intervals and their paired difference.

Used where a correction can be evaluated on the same trained models (both values from each
model) and where two runs are compared (``contrastlab report A --compare B``). The paired units
are the tasks (each task's seeds averaged first, as in the paired comparisons of methods); with a
single task, the seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import stats
from .tables import as_dict, summary

Values = dict[tuple[str, str], dict[int, float]]


@dataclass(frozen=True)
class Versions:
    """The two versions side by side: their column labels, the format of their numbers and the
    quantity's name (a leading column of the rows when given)."""

    label_a: str
    label_b: str
    fmt: str
    quantity: str = ""


def _units(a: Values, b: Values, method: str, tasks: list[str]) -> tuple[list[float], list[float], str]:
    """Paired values of ``method`` in a and b: one per task (seed means), or per seed with one task."""
    shared = [t for t in tasks if set(a.get((method, t), {})) & set(b.get((method, t), {}))]
    if len(shared) == 1:
        sa, sb = a[(method, shared[0])], b[(method, shared[0])]
        seeds = sorted(set(sa) & set(sb))
        return [sa[s] for s in seeds], [sb[s] for s in seeds], "seed"
    xa, xb = [], []
    for t in shared:
        sa, sb = a[(method, t)], b[(method, t)]
        seeds = sorted(set(sa) & set(sb))
        xa.append(float(np.mean([sa[s] for s in seeds])))
        xb.append(float(np.mean([sb[s] for s in seeds])))
    return xa, xb, "task"


def _interval(s: dict, fmt: str, sign: str = "") -> str:
    mean = format(float(s["mean"]), sign + fmt)
    low, high = float(s["ci_low"]), float(s["ci_high"])
    return f"{mean} [{format(low, fmt)}, {format(high, fmt)}]" if math.isfinite(low) and math.isfinite(high) else f"{mean} (n={s['n']})"


def side_by_side_rows(a: Values, b: Values, methods: list[str], tasks: list[str], confidence: float,
                      versions: Versions) -> tuple[list[dict], list[dict]]:
    """(HTML rows, CSV rows): per method, both versions' means with intervals over the paired units
    and the paired difference a − b with its interval and p-value. Methods without pairs are left out."""
    label_a, label_b, fmt, quantity = versions.label_a, versions.label_b, versions.fmt, versions.quantity
    shown, raw = [], []
    for method in methods:
        xa, xb, unit = _units(a, b, method, tasks)
        if not xa:
            continue
        sa, sb = summary(xa, confidence), summary(xb, confidence)
        d = as_dict(stats.paired_difference(np.asarray(xa), np.asarray(xb), confidence))
        diff = {"mean": d["estimate"], "ci_low": d["ci_low"], "ci_high": d["ci_high"], "n": d["n"]}
        p = float(d["p_value"])
        shown.append({**({"quantity": quantity} if quantity else {}), "method": method, label_a: _interval(sa, fmt),
                      label_b: _interval(sb, fmt), f"{label_a} − {label_b}": _interval(diff, fmt, "+"),
                      "p": f"{p:.3g}" if math.isfinite(p) else "—", "n": f"{len(xa)} {unit}{'s' if len(xa) != 1 else ''}"})
        raw.append({"quantity": quantity, "method": method, "a": label_a, "b": label_b, "unit": unit, "n": len(xa),
                    "mean_a": sa["mean"], "ci_low_a": sa["ci_low"], "ci_high_a": sa["ci_high"],
                    "mean_b": sb["mean"], "ci_low_b": sb["ci_low"], "ci_high_b": sb["ci_high"],
                    "difference": float(d["estimate"]), "ci_low": float(d["ci_low"]), "ci_high": float(d["ci_high"]), "p_value": p})
    return shown, raw
