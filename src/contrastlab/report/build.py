"""The study report, rebuilt from a run directory's stored results without recomputing anything.

Reads the run directory only through :mod:`contrastlab.rundir` (the finished units' manifests
and ``study.json``) and the units' output files, so it renders any run directory: a study's,
one of an older version, or the output folder of ``contrastlab finetune``. Writes
``DIR/report/``: ``report.html`` (self-contained: figures inlined, the interactive InPCA view
with plotly.js inlined), ``figures/*.png`` and ``tables/*.csv`` / ``*.md``. Sections whose units
have not run (disabled, or a cut study) say so instead of failing.

The sections, in page order: the claims (sections/conclusions.py), transfer accuracy,
distributions over tasks (with many tasks), pretraining, landscapes, sharpness, progress and
InPCA, robustness, paired comparisons, provenance.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

from .. import rundir
from ..errors import RunDirectoryError
from ..utils.io import write_text
from . import html as h
from .context import ReportContext, RunInfo, load_run, order_methods, run_families
from .figure_writer import FigureWriter
from .palette import use_families

log = logging.getLogger(__name__)


def _sections() -> tuple:
    """The sections, in page order. Imported when a report is built, not with this module: they load
    torch, scipy and matplotlib (seconds), which the figure workers' start-up can overlap."""
    from .sections.accuracy import accuracy_section
    from .sections.comparisons import comparisons_section
    from .sections.conclusions import conclusions_section
    from .sections.corrections import corrections_section
    from .sections.correlations import correlations_section
    from .sections.distributions import distributions_section
    from .sections.geometry import geometry_section
    from .sections.landscape import landscape_section
    from .sections.pretraining import pretraining_section
    from .sections.provenance import provenance_section
    from .sections.representation import representation_section
    from .sections.robustness import robustness_section
    from .sections.sharpness import sharpness_section

    return (conclusions_section, accuracy_section, distributions_section, pretraining_section, landscape_section,
            sharpness_section, geometry_section, robustness_section, representation_section, comparisons_section,
            correlations_section, corrections_section, provenance_section)


def _complete(run: RunInfo, values: dict) -> None:
    """Add the methods and tasks that only the output files name (a folder of single units)."""
    keys = [key for by_key in values.values() for key in by_key]
    run.methods = order_methods(set(run.methods) | {m for m, _ in keys}, run.methods)
    run.tasks = run.tasks + sorted({t for _, t in keys} - set(run.tasks))


def _intro(run: RunInfo) -> str:
    data, model = run.config.get("data") or {}, run.config.get("model") or {}
    parts = []
    if data.get("pretrain") and data.get("downstream"):
        parts.append(f"{data['pretrain']} → {data['downstream']}")
    if model.get("encoder"):
        parts.append(f"{model['encoder']} width {model.get('width')}")
    parts += [f"methods {', '.join(run.methods) or 'none'}", f"seeds {run.seeds}", f"{len(run.tasks)} tasks"]
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return ", ".join(parts) + f". Built {stamp} from {run.run_dir}."


def checked_units(run: RunInfo, allow_changed: bool = False) -> list[str]:
    """Check every file of ``run``'s finished units against its manifest (sha256) and drop the units
    it cannot trust from ``run.units``; return one note per dropped unit (each also a warning).

    A missing file drops its unit with a warning naming it. A changed file refuses the report
    (RunDirectoryError naming it) unless ``allow_changed``: then its unit is dropped likewise."""
    changed: list[str] = []
    notes: list[str] = []
    for kind, units in run.units.items():
        kept = []
        for unit in units:
            problems = rundir.changed_outputs(unit.folder, unit.manifest)
            if not problems:
                kept.append(unit)
                continue
            if any(p.endswith(" changed") for p in problems) and not allow_changed:
                changed.append(f"{unit.id}/{problems[0].removesuffix(' changed')}")
                continue
            note = f"{unit.id} left out: {', '.join(problems)} since it finished"
            log.warning("%s; run the study again to recompute it", note)
            notes.append(note)
        run.units[kind] = kept
    if changed:
        raise RunDirectoryError(
            f"{changed[0]} changed since its unit finished ({len(changed)} unit{'s' if len(changed) > 1 else ''} in all); "
            "run the study again to recompute it, or pass --allow-changed to build the report without those units")
    return notes


def build_report(run_dir: str | Path, compare: str | Path | None = None, *, workers: int | None = None,
                 allow_changed: bool = False, verify: bool = True) -> Path:
    """Rebuild ``run_dir/report`` from stored results; return the path of report.html. With
    ``compare`` (another run directory), add a section comparing this run's headline numbers with its.

    ``workers`` processes render the figures (None: a few, see :class:`FigureWriter`; 1: all in this
    process). They start with a fork server (or "spawn"), both of which import the calling script
    as a module, so a script calling this with more than one worker needs the usual
    ``if __name__ == "__main__":`` guard.

    Every unit's files are checked against its manifest first (:func:`checked_units`): a unit with a
    missing file is left out with a warning; a changed file refuses the report unless ``allow_changed``.
    ``verify=False`` skips that check (for a study that has just checked them)."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    if run.study is None and not any(run.units.values()):
        raise RunDirectoryError(f"{run_dir} holds no study and no finished unit; run `contrastlab study --out {run_dir}` first")
    # Before anything is read: only what matches its manifest. A study's own report skips this second
    # pass: the study has just checked every unit it did not run (is_done hashes their files) and written the rest.
    dropped = checked_units(run, allow_changed) if verify else []
    # Entered before the sections are imported and the results read, so that the workers start meanwhile.
    with FigureWriter(workers) as writer:
        from .results import collect
        from .sections.compare_runs import compare_section

        sections = _sections()
        collected = collect(run)
        _complete(run, collected.values)
        ctx = ReportContext(run=run, results=collected.values, curves=collected.curves, out=rundir.report_dir(run_dir),
                            notes=list(collected.notes) + dropped, writer=writer)
        with use_families(run_families(run)):  # every figure colours methods by family (palette.py)
            for add in sections:
                add(ctx)
        if compare is not None:
            other = load_run(Path(compare))
            checked_units(other, allow_changed)
            if other.study is None and not any(other.units.values()):
                raise RunDirectoryError(f"{compare} holds no study and no finished unit to compare with")
            compare_section(ctx, other)
            ctx.sections.insert(len(ctx.sections) - 1, ctx.sections.pop())  # before provenance
    # Every figure is on disk now: the page inlines them.
    title = f"contrastlab study: {run.name}" if run.study else f"contrastlab results: {run.name}"
    return write_text(rundir.report_page(run_dir), h.page(title, _intro(run), ctx.sections))


def summary_text(summary, verbose: bool = False) -> str:
    """The one-screen summary the CLI prints after a study: the accuracy table, then one line counting
    the claims' verdicts (every claim with ``verbose``)."""
    lines = [f"study finished in {summary.seconds:.0f} s: {len(summary.ran)} units run, {len(summary.skipped)} already done"]
    tables = rundir.report_dir(summary.run_dir) / rundir.REPORT_TABLES
    accuracy = tables / "accuracy.md"
    if accuracy.exists():
        lines += ["", "probe accuracy (%), mean [confidence interval] over seeds:", accuracy.read_text().rstrip()]
    verdicts, claims = tables / "verdicts.txt", tables / "summary.md"
    if verbose and claims.exists() and claims.read_text().strip():
        lines += ["", claims.read_text().rstrip()]
    if verdicts.exists():
        where = f"{summary.report}#claims" if summary.report is not None else str(tables / "claims.csv")
        lines += ["", f"claims: {verdicts.read_text().strip()}; details: {where}"]
    if summary.report is not None:
        lines += [f"report: {summary.report}"]
    return "\n".join(lines)
