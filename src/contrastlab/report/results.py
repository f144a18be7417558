"""Per-seed results read from the units' output files, one number per (quantity, method, task, seed).

Every table, comparison, claim and distribution of the report is computed from what
:func:`collect` returns: per-seed numbers ``quantity -> {(method, task): {seed: value}}`` and the
curves behind some of them ``curve -> {(method, task): {seed: array(s)}}``, so each number is
read and defined in one place. The readers below are the only code that knows the output files'
formats (result.json, progress.csv, sharpness.json, <attack>.csv).
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import rundir
from ..utils.io import read_json
from .claims import robustness_score
from .context import RunInfo


@dataclass(frozen=True)
class Quantity:
    key: str
    label: str
    fmt: str  # format spec of a number in the HTML
    short: str = ""  # a figure panel's title
    bounds: tuple[float, float] | None = None  # a proportion's range: its intervals stay inside it

    @property
    def title(self) -> str:
        return self.short or self.label


QUANTITIES = {q.key: q for q in (
    Quantity("probe_accuracy", "linear-probe validation accuracy (%)", ".2f", "probe accuracy (%)", (0.0, 100.0)),
    Quantity("knn_accuracy", "k-NN accuracy on frozen features (%)", ".2f", "k-NN accuracy (%)", (0.0, 100.0)),
    Quantity("t_w", "final progress t_w", ".3f", "final t_w"),
    Quantity("t_w_raw", "final progress t_w (raw-p formula)", ".3f"),
    Quantity("sharpness_top_normalized", "top Hessian eigenvalue, filter-normalized", ".4g", "top eigenvalue (filter-normalized)"),
    Quantity("sharpness_trace_normalized", "Hessian trace, filter-normalized", ".4g"),
    Quantity("sharpness_top", "top Hessian eigenvalue (raw)", ".4g", "top eigenvalue (raw Hessian)"),
    Quantity("sharpness_trace", "Hessian trace (raw)", ".4g"),
    Quantity("fgsm_score", "FGSM robustness score (accuracy area over [0, ε_max] / ε_max · clean accuracy)", ".3f", "FGSM robustness score"),
    Quantity("pgd_score", "PGD robustness score (accuracy area over [0, ε_max] / ε_max · clean accuracy)", ".3f"),
)}

Results = dict[str, dict[tuple[str, str], dict[int, float]]]
Curves = dict[str, dict[tuple[str, str], dict[int, object]]]


@dataclass
class Collected:
    values: Results  # quantity -> (method, task) -> seed -> number
    curves: Curves  # "t_w", "t_w_raw" -> ... -> t_w per epoch; "fgsm", "pgd" -> ... -> (eps, accuracy, loss)
    notes: list[str]  # what could not be computed, and why


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def identity(unit: rundir.UnitRecord, sidecar: dict | None = None) -> tuple[str, str, int]:
    """(method, task, seed) of a unit; the output sidecar fills what a bare manifest lacks
    (e.g. the folder of ``contrastlab finetune --out X``)."""
    sidecar = sidecar or {}
    method = unit.method or sidecar.get("method") or (unit.manifest.get("encoder") or {}).get("source") or "encoder"
    classes = unit.task_classes or sidecar.get("task_classes")
    task = unit.task or (rundir.task_name(classes) if classes else "task")
    seed = unit.seed if unit.seed is not None else sidecar.get("pretrain_seed", sidecar.get("seed", 0))
    return str(method), task, int(seed or 0)


def progress_curves(unit: rundir.UnitRecord) -> dict[str, dict[str, dict[int, np.ndarray]]]:
    """progress.csv of a geometry unit: column (t_w, t_w_raw) -> method -> seed -> t_w per epoch."""
    path = unit.path(rundir.PROGRESS)
    if not path.exists():
        return {}
    rows = read_csv(path)
    curves: dict[str, dict[str, dict[int, list[float]]]] = {}
    for column in ("t_w", "t_w_raw"):
        if rows and column in rows[0]:
            by_method: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
            for r in sorted(rows, key=lambda r: int(r["epoch"])):
                # an encoder from elsewhere has no pretraining seed: 0, as identity() says
                by_method[r["method"]][int(r["seed"] or 0)].append(float(r[column]))
            curves[column] = {m: {s: np.asarray(v) for s, v in seeds.items()} for m, seeds in by_method.items()}
    return curves


def robustness_curve(unit: rundir.UnitRecord, attack: str, space: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(eps in pixel units, accuracy, loss) of ``<attack>.csv`` (``<attack>_<space>.csv`` for the compared
    space); None when the unit has no such attack."""
    path = unit.path(rundir.attack_file(attack, space))
    if not path.exists():
        return None
    rows = read_csv(path)
    accuracy, loss = (np.array([float(r[c]) for r in rows]) for c in ("accuracy", "loss"))
    # eps_255 / 255 where written: the "eps" column's 8 decimals put k/255 a few 1e-9 short of itself.
    eps = np.array([float(r["eps_255"]) / 255 if r.get("eps_255") else float(r["eps"]) for r in rows])
    return eps, accuracy, loss


def sharpness_values(result: dict) -> dict[str, float]:
    """The raw Hessian's numbers and, when computed, the filter-normalized Hessian's."""
    out = {"sharpness_top": float(result["top_eigenvalues"][0]), "sharpness_trace": float(result["trace"])}
    normalized = result.get("normalized")
    if normalized:
        out["sharpness_top_normalized"] = float(normalized["top_eigenvalues"][0])
        out["sharpness_trace_normalized"] = float(normalized["trace"])
    return out


def collect(run: RunInfo) -> Collected:
    """Every per-seed number and curve of the run; quantities without a finished unit are absent."""
    values: Results = defaultdict(lambda: defaultdict(dict))
    curves: Curves = defaultdict(lambda: defaultdict(dict))
    problems: Counter = Counter()
    for unit in run.units.get("finetune", []):
        result = read_json(unit.path(rundir.RESULT))
        method, task, seed = identity(unit, result)
        for key, field_name in (("probe_accuracy", "val_accuracy"), ("knn_accuracy", "knn_accuracy")):
            if result.get(field_name) is not None:
                values[key][(method, task)][seed] = 100.0 * float(result[field_name])
    for unit in run.units.get("geometry", []):
        for column, by_method in progress_curves(unit).items():
            for method, seeds in by_method.items():
                for seed, curve in seeds.items():
                    curves[column][(method, unit.task)][seed] = curve
                    values[column][(method, unit.task)][seed] = float(curve[-1])
    for unit in run.units.get("sharpness", []):
        result = read_json(unit.path(rundir.SHARPNESS))
        method, task, seed = identity(unit, result)
        for key, value in sharpness_values(result).items():
            values[key][(method, task)][seed] = value
    eps_max = float(run.report.claims.robustness_eps_max_255) / 255
    for unit in run.units.get("robustness", []):
        method, task, seed = identity(unit)
        for attack in ("fgsm", "pgd"):
            curve = robustness_curve(unit, attack)
            if curve is None:
                continue
            curves[attack][(method, task)][seed] = curve
            try:
                values[f"{attack}_score"][(method, task)][seed] = robustness_score(curve[0], curve[1], eps_max)
            except ValueError as error:  # e.g. the ε grid stops short of ε_max
                problems[f"no {attack.upper()} robustness score: {error}"] += 1
    notes = [f"{text} ({n} run{'s' if n > 1 else ''})" for text, n in problems.items()]
    plain = lambda d: {q: {k: dict(v) for k, v in by_key.items()} for q, by_key in d.items() if by_key}  # noqa: E731
    return Collected(plain(values), plain(curves), notes)


def fgsm_space_scores(run: RunInfo) -> dict[str, Results]:
    """FGSM robustness scores by the space ε was applied in: space -> {(method, task): {seed: score}}.

    ``fgsm.csv`` is in the space its robustness.json names; ``fgsm_<space>.csv`` (written with
    analysis.robustness.compare_spaces) is the same attack in the other space, on the same model."""
    eps_max = float(run.report.claims.robustness_eps_max_255) / 255
    scores: dict[str, Results] = defaultdict(lambda: defaultdict(dict))
    for unit in run.units.get("robustness", []):
        method, task, seed = identity(unit)
        sidecar = read_json(unit.path(rundir.ROBUSTNESS)) if unit.path(rundir.ROBUSTNESS).exists() else {}
        main = sidecar.get("space", "pixel")
        for space, compared in ((main, None), *((s, s) for s in ("pixel", "normalized") if s != main)):
            curve = robustness_curve(unit, "fgsm", compared)
            if curve is None:
                continue
            try:
                scores[space][(method, task)][seed] = robustness_score(curve[0], curve[1], eps_max)
            except ValueError:  # the ε grid stops short of ε_max: noted by collect() already
                continue
    return {space: {k: dict(v) for k, v in by_key.items()} for space, by_key in scores.items()}


def inpca_comparisons(run: RunInfo) -> dict[str, dict]:
    """task -> inpca_comparison.json of its geometry unit (the map with one P* and with one per seed)."""
    found = {}
    for unit in run.units.get("geometry", []):
        path = unit.path(rundir.INPCA_COMPARISON)
        if path.exists():
            found[unit.task] = read_json(path)
    return found


def landscape_seedings(run: RunInfo) -> dict[str, Results]:
    """Mean loss rise over the landscape grid (mean loss in the grid − loss at θ*) by direction
    seeding: seeding -> {(method, task): {seed: rise}}, from surface.npy and, where computed
    (analysis.landscape.compare_seeding), surface_<other seeding>.npy of the same model."""
    from ..analysis.surface_grid import load_surface

    rises: dict[str, Results] = defaultdict(lambda: defaultdict(dict))
    for unit in run.units.get("landscape", []):
        for path in rundir.surface_files(unit.folder):
            surface, meta = load_surface(path)
            seeding = meta.get("direction_seeding", "shared")
            method, task, seed = identity(unit, meta)
            centre = (len(surface.ys) // 2, len(surface.xs) // 2) if surface.ys is not None else (len(surface.xs) // 2,)
            rises[seeding][(method, task)][seed] = float(np.nanmean(surface.loss) - surface.loss[centre])
    return {s: {k: dict(v) for k, v in by_key.items()} for s, by_key in rises.items()}
