"""Tables of a study: rows of plain dicts, written as CSV (and Markdown), with their uncertainty.

A table of per-seed results has one row per (method, task): n (seeds), mean, sample std and the
t-interval of the mean at the report's confidence (:func:`contrastlab.stats.summarize`), beside
the seeds' ``values``. Comparisons pair methods seed by seed within a task, and task by task
(seeds averaged within each task) over all tasks.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from itertools import combinations
from pathlib import Path

import numpy as np

from .. import stats
from ..utils.io import csv_text, write_text
from .results import QUANTITIES, Results

# What the original study reported (docs/design-notes.md), for side-by-side comparison.
PAPER_ACCURACY = {
    "simclr": [79.95, 86.11, 92.55, 90.91],
    "supcon": [78.20, 78.85, 89.53, 88.26],
    "supce": [82.48, 82.50, 93.50, 88.79],
}
PAPER_FINAL_PROGRESS = {  # read off its figure; computed with the raw-p formula
    "simclr": [0.72, 0.74, 0.86, 0.86],
    "supcon": [0.59, 0.61, 0.80, 0.76],
    "supce": [0.70, 0.70, 0.89, 0.82],
}


def as_dict(result) -> dict:
    """A stats result (dataclass, named tuple or dict) as a plain dict."""
    if dataclasses.is_dataclass(result):
        return dataclasses.asdict(result)
    if hasattr(result, "_asdict"):
        return dict(result._asdict())
    return dict(result)


def _number(value, digits: int = 6):
    """Rounded for the CSV; NaN (an interval of one seed) stays NaN."""
    value = float(value)
    return value if not math.isfinite(value) else round(value, digits)


def summary(values, confidence: float) -> dict:
    """n, mean, std, ci_low, ci_high of ``values``."""
    s = as_dict(stats.summarize(np.asarray(list(values), dtype=np.float64), confidence))
    return {k: (int(s[k]) if k == "n" else _number(s[k])) for k in ("n", "mean", "std", "ci_low", "ci_high")}


# Cells with fewer seeds than this borrow the seed-to-seed spread of every cell of the table: a
# t-interval from 2 seeds has 1 degree of freedom (a 95% half-width of 12.7 standard errors).
POOL_BELOW = 5


@dataclasses.dataclass(frozen=True)
class CellModel:
    """How a table's intervals are computed: on which scale, with which spread."""

    bounds: tuple[float, float] | None  # a proportion's range (e.g. (0, 100)): logit scale; None: raw
    pooled: stats.Pooled | None  # the spread pooled over cells (None: each cell its own)
    cells: int  # cells behind the pooled spread

    def transform(self, values) -> np.ndarray:
        x = np.asarray(list(values), dtype=np.float64)
        return stats.logit(x / self.bounds[1]) if self.bounds else x

    def describe(self, confidence: float) -> str:
        scale = (f"logit-scale t-interval back-transformed, so it stays within [{self.bounds[0]:g}, {self.bounds[1]:g}]"
                 if self.bounds else "t-interval")
        if self.pooled is None:
            return f"{confidence:.0%} {scale}, each cell with its own seeds' spread (df = n − 1)"
        return (f"{confidence:.0%} {scale}, with the seed-to-seed spread pooled over the table's {self.cells} "
                f"method × task cells (df = {self.pooled.df})")


def cell_model(by_key: Mapping[tuple[str, str], Mapping[int, float]], bounds: tuple[float, float] | None) -> CellModel:
    """Pooled when some cell has fewer than :data:`POOL_BELOW` seeds, else each cell its own."""
    groups = [list(seeds.values()) for seeds in by_key.values() if seeds]
    model = CellModel(bounds, None, len(groups))
    if groups and min(len(g) for g in groups) < POOL_BELOW:
        pooled = stats.pooled_spread([model.transform(g) for g in groups])
        return CellModel(bounds, pooled if pooled.df >= 1 else None, sum(len(g) >= 2 for g in groups))
    return model


def model_interval(model: CellModel, mean: float, se: float, df: int, confidence: float) -> tuple[float, float]:
    """The interval of ``mean`` with standard error ``se`` on the model's scale (logit se for a proportion)."""
    if model.bounds:
        return stats.logit_interval(mean, se, df, confidence, scale=model.bounds[1])
    return stats.t_interval(mean, se, df, confidence)


def cell_interval(model: CellModel, values: list[float], confidence: float) -> tuple[float, float, int]:
    """(ci_low, ci_high, df) of one cell's mean under ``model``."""
    n = len(values)
    if model.pooled is not None:
        sd, df = model.pooled.sd, model.pooled.df
    else:
        sd, df = (float(np.std(model.transform(values), ddof=1)), n - 1) if n >= 2 else (math.nan, 0)
    low, high = model_interval(model, float(np.mean(values)), sd / math.sqrt(n), df, confidence)
    return _number(low), _number(high), df


def pooled_mean_interval(model: CellModel, cells: list[list[float]], confidence: float) -> dict:
    """Mean over tasks of the per-task means and its interval with the tasks fixed (only seed noise):
    var = Σ σ²/n_t / T², on the logit scale through the delta method for a proportion."""
    means = [float(np.mean(v)) for v in cells]
    mean, tasks = float(np.mean(means)), len(cells)
    spread = model.pooled or stats.pooled_spread([model.transform(v) for v in cells])
    if model.bounds:
        scale = model.bounds[1]
        slopes = [(m / scale) * (1 - m / scale) for m in means]  # d p / d logit(p) at each task's mean
        p = mean / scale
        variance = sum((g * spread.sd) ** 2 / len(v) for g, v in zip(slopes, cells)) / tasks ** 2
        se = math.sqrt(variance) / max(float(p * (1 - p)), 1e-12)
    else:
        se = math.sqrt(sum(spread.sd ** 2 / len(v) for v in cells)) / tasks
    low, high = model_interval(model, mean, se, spread.df, confidence)
    return {"n": sum(len(v) for v in cells), "mean": _number(mean), "ci_low": _number(low), "ci_high": _number(high)}


def seed_rows(by_key: Mapping[tuple[str, str], Mapping[int, float]], methods: list[str], tasks: list[str],
              confidence: float, model: CellModel | None = None) -> list[dict]:
    """One row per (method, task) that has values: mean, std and n over seeds, the interval of
    ``model`` (default: each cell's own t-interval) with its df, and the seeds' values."""
    model = model or CellModel(None, None, 0)
    rows = []
    for method in methods:
        for task in tasks:
            seeds = by_key.get((method, task))
            if not seeds:
                continue
            s = summary(seeds.values(), confidence)
            low, high, df = cell_interval(model, list(seeds.values()), confidence)
            rows.append({"method": method, "task": task, "mean": s["mean"], "std": s["std"], "n": s["n"],
                         "ci_low": low, "ci_high": high, "df": df,
                         "interval": "pooled" if model.pooled is not None else "own",
                         "seeds": json.dumps(sorted(seeds)), "values": json.dumps([round(seeds[k], 6) for k in sorted(seeds)])})
    return rows


def interval_text(row: Mapping, fmt: str) -> str:
    """"mean [ci_low, ci_high]" (numbers in format ``fmt``); a single seed has no interval: "mean (n=1)"."""
    mean = format(float(row["mean"]), fmt)
    low, high = float(row["ci_low"]), float(row["ci_high"])
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean} (n={row['n']})"
    return f"{mean} [{format(low, fmt)}, {format(high, fmt)}]"


def pivot_markdown(rows: list[dict], methods: list[str], tasks: list[str], cell: Callable[[dict], str],
                   reference: Mapping[str, list[float]] | None = None) -> str:
    """Methods as rows, tasks as columns; reference values (task order) shown as '(paper x)'."""
    by_key = {(r["method"], r["task"]): r for r in rows}
    lines = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for method in methods:
        if not any((method, t) in by_key for t in tasks):
            continue
        cells = []
        for t, task in enumerate(tasks):
            row = by_key.get((method, task))
            text = cell(row) if row else "—"
            if reference and method in reference and t < len(reference[method]):
                text += f" (paper {reference[method][t]:g})"
            cells.append(text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _paired(a: list[float], b: list[float], confidence: float) -> dict:
    d = as_dict(stats.paired_difference(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), confidence))
    return {"n": int(d["n"]), "difference": _number(d["estimate"]), "ci_low": _number(d["ci_low"]),
            "ci_high": _number(d["ci_high"]), "p_value": _number(d["p_value"])}


def comparison_rows(results: Results, methods: list[str], tasks: list[str], confidence: float) -> list[dict]:
    """Every pair of methods on every quantity: per task (paired over seeds) and pooled (paired
    over tasks, each task's seeds averaged). difference = method_a − method_b."""
    rows = []
    for key, by_key in results.items():
        for a, b in combinations(methods, 2):
            pooled_a, pooled_b = [], []
            for task in tasks:
                sa, sb = by_key.get((a, task), {}), by_key.get((b, task), {})
                seeds = sorted(set(sa) & set(sb))
                if not seeds:
                    continue
                pooled_a.append(float(np.mean([sa[s] for s in seeds])))
                pooled_b.append(float(np.mean([sb[s] for s in seeds])))
                rows.append({"quantity": key, "method_a": a, "method_b": b, "scope": task, "unit": "seed",
                             **_paired([sa[s] for s in seeds], [sb[s] for s in seeds], confidence)})
            if pooled_a:
                rows.append({"quantity": key, "method_a": a, "method_b": b, "scope": "pooled", "unit": "task",
                             **_paired(pooled_a, pooled_b, confidence)})
    order = {k: i for i, k in enumerate(QUANTITIES)}
    return sorted(rows, key=lambda r: (order.get(r["quantity"], len(order)), r["scope"] != "pooled"))


def write_table(folder: Path, name: str, rows: list[dict], markdown: str | None = None) -> None:
    write_text(folder / f"{name}.csv", csv_text(rows) if rows else "")
    if markdown is not None:
        write_text(folder / f"{name}.md", markdown)
