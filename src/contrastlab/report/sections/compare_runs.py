"""This run against another one (``contrastlab report A --compare B``): the headline numbers of
both, per method, with intervals and the paired difference over the tasks both ran.

This is how corrections that change training (input normalization statistics, the schedule's
end) are evaluated: a faithful run against a corrected run of the same protocol. The other run
is read like this one, through its manifests and output files only.
"""

from __future__ import annotations

from .. import html as h
from ..context import ReportContext, RunInfo, Section
from ..faithfulness import behaviour_rows
from ..results import QUANTITIES, collect
from ..side_by_side import Versions, side_by_side_rows
from ..tables import write_table

HEADLINES = ("probe_accuracy", "t_w", ("sharpness_top_normalized", "sharpness_top"), "fgsm_score")


def _headline_key(a: dict, b: dict, choice) -> str | None:
    """The first quantity of ``choice`` that both runs have."""
    for key in (choice,) if isinstance(choice, str) else choice:
        if key in a and key in b:
            return key
    return None


def compare_section(ctx: ReportContext, other: RunInfo) -> None:
    run = ctx.run
    section = Section(f"Compared with {other.name}", "compare")
    theirs = collect(other).values
    label_a, label_b = f"this run ({run.name})", f"{other.name}"
    if label_a == label_b:
        label_b += " (other)"
    section.body.append(h.paragraph(
        f"{h.esc(str(run.run_dir))} against {h.esc(str(other.run_dir))}: per method, each run's mean with its "
        f"{run.confidence:.0%} t-interval and the paired difference this − other, paired over the tasks both ran (each "
        "task's seeds averaged; over seeds with a single shared task). tables/compare.csv holds the numbers."))
    differing = [r for r in (_setting_rows(run.config, other.config))]
    if differing:
        section.body += ["<h3>Settings that differ</h3>", h.table(differing)]
    csv_rows = []
    for choice in HEADLINES:
        key = _headline_key(ctx.results, theirs, choice)
        if key is None:
            continue
        q = QUANTITIES[key]
        shown, raw = side_by_side_rows(ctx.results[key], theirs[key], run.methods, run.tasks, run.confidence,
                                       Versions(label_a, label_b, q.fmt, quantity=key))
        if shown:
            csv_rows += raw
            section.body += [f"<h3>{h.esc(q.label)}</h3>", h.table(shown)]
    write_table(ctx.table_dir, "compare", csv_rows)
    if not csv_rows:
        section.body.append(h.missing(f"no headline number present in both runs for a shared method and task ({other.run_dir})"))
    ctx.sections.append(section)


def _setting_rows(a: dict, b: dict) -> list[dict]:
    """The original-code behaviours whose values differ between the two runs."""
    mine, theirs = behaviour_rows(a), {r["key"]: r for r in behaviour_rows(b)}
    return [{"behaviour": r["behaviour"], "key": r["key"], "this run": r["this run"], "other run": theirs[r["key"]]["this run"],
             "original": r["original"]} for r in mine if r["this run"] != theirs[r["key"]]["this run"]]
