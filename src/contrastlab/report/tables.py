"""Tables of a study, read from its run directory: rows of plain dicts, written as CSV and Markdown."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ..config import StudyConfig
from ..study.plan import Unit, plan_units, study_methods, task_name
from ..utils.io import csv_text, read_json, write_text

# What the original study reported (DESIGN.md), for side-by-side comparison.
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


def finished(units: Iterable[Unit], run_dir: Path, kind: str) -> list[Unit]:
    """The units of ``kind`` whose done.json exists (the report uses what is there)."""
    from ..study.units import is_done

    return [u for u in units if u.kind == kind and is_done(u, run_dir)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def seed_table(config: StudyConfig, values: dict[tuple[str, int], list[float]], scale: float = 1.0) -> list[dict]:
    """One row per (method, task) with mean/std over seeds of ``values[(method, task)]``."""
    rows = []
    for method in study_methods(config):
        for t, classes in enumerate(config.data.tasks):
            vals = values.get((method, t))
            if not vals:
                continue
            mean, std = mean_std([v * scale for v in vals])
            rows.append({"method": method, "task": task_name(classes), "mean": round(mean, 4), "std": round(std, 4),
                         "n_seeds": len(vals), "values": json.dumps([round(v * scale, 4) for v in vals])})
    return rows


def accuracy_values(config: StudyConfig, run_dir: Path, field: str) -> dict[tuple[str, int], list[float]]:
    """``field`` of every finished probe's result.json, grouped by (method, task)."""
    values: dict[tuple[str, int], list[float]] = defaultdict(list)
    for unit in finished(plan_units(config), run_dir, "finetune"):
        values[(unit.method, unit.task)].append(read_json(unit.folder(run_dir) / "result.json")[field])
    return values


def pivot_markdown(rows: list[dict], config: StudyConfig, cell: Callable[[dict], str], reference: dict | None = None) -> str:
    """Methods as rows, tasks as columns; optional reference values shown as '(paper x)'."""
    tasks = [task_name(c) for c in config.data.tasks]
    by_key = {(r["method"], r["task"]): r for r in rows}
    lines = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for method in study_methods(config):
        cells = []
        for t, name in enumerate(tasks):
            row = by_key.get((method, name))
            text = cell(row) if row else "—"
            if reference and method in reference and t < len(reference[method]):
                text += f" (paper {reference[method][t]:g})"
            cells.append(text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_table(folder: Path, name: str, rows: list[dict], markdown: str | None = None) -> None:
    write_text(folder / f"{name}.csv", csv_text(rows) if rows else "")
    if markdown is not None:
        write_text(folder / f"{name}.md", markdown)


def paper_tasks_match(config: StudyConfig) -> bool:
    """The paper's reference numbers apply only to the paper's data and task lists."""
    from ..config import PAPER_TASKS

    return config.data.downstream == "cifar100" and config.data.tasks == PAPER_TASKS
