"""What the report knows about a run directory before it draws anything.

Everything comes from :mod:`contrastlab.rundir`: the finished units (their manifests) and
``study.json`` when there is one. The study's config is used only for what the units cannot
say (the study's name, seed and task order, the report's confidence level and claim
thresholds); without it, methods, tasks and seeds are those present in the manifests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from .. import rundir
from . import html as h
from ..config import PAPER_TASKS, ReportConfig
from ..families import entry_name, method_families
from .figure_writer import FigureWriter

log = logging.getLogger(__name__)

RANDOM = "random"  # the random-init baseline's method name
METHOD_ORDER = ("simclr", "supcon", "supce")  # then any other method, the random baseline last
KINDS = ("pretrain", "finetune", "landscape", "sharpness", "robustness", "geometry")
PER_TASK_FIGURES = 4  # per-task figures are drawn for the first tasks only; the rest are listed


@dataclass
class RunInfo:
    """The run directory's study, as far as the report needs it."""

    run_dir: Path
    study: dict | None  # study.json, None for a folder that holds no study
    config: dict  # study.json's config (a plain dict), {} without one
    units: dict[str, list[rundir.UnitRecord]]  # kind -> finished units
    methods: list[str]
    tasks: list[str]  # task names in the study's order
    seeds: list[int]
    report: ReportConfig  # confidence and claim thresholds

    @property
    def name(self) -> str:
        return str((self.study or {}).get("name") or self.config.get("name") or self.run_dir.name)

    @property
    def confidence(self) -> float:
        return float(self.report.confidence)

    @property
    def paper_tasks(self) -> bool:
        """The paper's reference numbers apply only to the paper's data and task lists."""
        data = self.config.get("data", {})
        return data.get("downstream") == "cifar100" and self.tasks == [rundir.task_name(t) for t in PAPER_TASKS]

    def shown_tasks(self) -> tuple[list[str], list[str]]:
        """(tasks drawn in per-task figures, tasks only listed by name)."""
        return self.tasks[:PER_TASK_FIGURES], self.tasks[PER_TASK_FIGURES:]


def order_methods(methods, preferred=()) -> list[str]:
    """simclr, supcon, supce, then the others (in ``preferred`` order, else sorted), random last."""
    methods = set(methods)
    known = [m for m in METHOD_ORDER if m in methods]
    others = [m for m in preferred if m in methods and m not in known and m != RANDOM]
    others += sorted(methods - set(known) - set(others) - {RANDOM})
    return known + others + ([RANDOM] if RANDOM in methods else [])


def _task_key(name: str) -> tuple:
    classes = rundir.task_classes(name)
    return (0, classes, "") if classes is not None else (1, [], name)


def order_tasks(present, config_tasks) -> list[str]:
    """The config's task order where it is known, then the other tasks sorted by their classes."""
    ordered = [rundir.task_name(c) for c in config_tasks or []]
    ordered = [t for i, t in enumerate(ordered) if t not in ordered[:i]]
    return ordered + sorted(set(present) - set(ordered), key=_task_key)


def report_settings(config: dict) -> ReportConfig:
    """The config's ``report`` section over the defaults (a study of an older version has none)."""
    merged = OmegaConf.merge(OmegaConf.structured(ReportConfig), config.get("report") or {})
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def _of_this_study(unit: rundir.UnitRecord, config: dict) -> bool:
    """Whether ``unit`` belongs to the study's configuration. After ``--force`` into a directory of
    another configuration, units of the old one stay on disk (nothing finished is deleted) but are
    not this study's results. Without a study config every unit counts."""
    tasks = {rundir.task_name(c) for c in (config.get("data") or {}).get("tasks") or []}
    methods = set(config_methods(config)) | {"random"}
    seeds = set(config.get("seeds") or ())
    return ((not tasks or unit.task is None or unit.task in tasks)
            and (len(methods) == 1 or unit.method is None or unit.method in methods)
            and (not seeds or unit.seed is None or unit.seed in seeds))


def load_run(run_dir: str | Path) -> RunInfo:
    """Read the manifests and ``study.json`` of ``run_dir``."""
    run_dir = Path(run_dir)
    study = rundir.read_study(run_dir)
    config = dict((study or {}).get("config") or {})
    units: dict[str, list[rundir.UnitRecord]] = {kind: [] for kind in KINDS}
    for unit in rundir.finished_units(run_dir):
        if _of_this_study(unit, config):
            units.setdefault(unit.kind, []).append(unit)
    present = [u for kind in units.values() for u in kind]
    methods = order_methods({u.method for u in present if u.method}, config_methods(config))
    tasks = order_tasks({u.task for u in present if u.task}, config.get("data", {}).get("tasks"))
    seeds = sorted({int(u.seed) for u in present if u.seed is not None} | set(config.get("seeds") or ()))
    return RunInfo(run_dir, study, config, units, methods, tasks, seeds, report_settings(config))


def config_methods(config: dict) -> list[str]:
    """The method names of a stored config's ``methods`` (entries are names or external mappings)."""
    return [entry_name(entry) for entry in config.get("methods") or ()]


def run_families(run: RunInfo) -> dict[str, str]:
    """{method: family} of every method of the run: the stored config's entries (external ones name
    theirs), then the built-in family of any other method present, "unknown" for the rest."""
    families = method_families(run.config.get("methods") or (), random_baseline=True)
    others = method_families([m for m in run.methods if m not in families], random_baseline=False)
    return {**families, **others}


def unit_settings(unit: rundir.UnitRecord, sidecar: dict | None = None) -> dict:
    """A unit's stage settings: its manifest's ``settings`` (format 2) over its output sidecar."""
    return {**(sidecar or {}), **(unit.manifest.get("settings") or {})}


@dataclass
class Section:
    title: str
    anchor: str
    body: list = field(default_factory=list)  # HTML fragments: strings, and html.Img read when the page is made


@dataclass
class ReportContext:
    """The report being built: its inputs, the collected per-seed results and its output."""

    run: RunInfo
    results: dict  # quantity -> {(method, task): {seed: value}}, see results.py
    curves: dict  # curve -> {(method, task): {seed: curve}}, see results.py
    out: Path
    sections: list[Section] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be computed, shown with the claims
    writer: FigureWriter | None = None  # None: each figure is written at once

    def add_empty(self, section: Section, why: str) -> None:
        """Add ``section`` holding only the line that says why it has nothing to show."""
        section.body.append(h.missing(why))
        self.sections.append(section)

    @property
    def figure_dir(self) -> Path:
        return self.out / rundir.REPORT_FIGURES

    @property
    def table_dir(self) -> Path:
        return self.out / rundir.REPORT_TABLES

    def save_figure(self, figure, name: str) -> Path:
        """Have ``figure`` written as figures/<name>.png (by the writer's workers, if it has any) and
        release it (figures are never shown). The file is on disk once the writer is closed."""
        path = self.figure_dir / f"{name}.png"
        if getattr(figure.canvas, "manager", None) is not None:  # made with pyplot: unregister it first,
            import matplotlib.pyplot as plt  # so that a worker unpickling it does not register it again

            plt.close(figure)
        (self.writer or FigureWriter()).submit(figure, path)
        # Not figure.clear(): clearing rebuilds every axis (~0.1 s a figure); the figure is garbage now.
        self.figures.append(path)
        return path
