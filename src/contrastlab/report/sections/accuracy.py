"""Transfer accuracy (the paper's Table 1): linear-probe and k-NN accuracy per method and task."""

from __future__ import annotations

from ... import rundir
from ...utils.io import read_json
from .. import html as h
from ..context import RANDOM, ReportContext, Section, unit_settings
from ..tables import PAPER_ACCURACY
from .common import quantity_table


def probe_description(ctx: ReportContext) -> str:
    """How the probes were trained, from a finetune unit's settings (manifest or its result file)."""
    units = ctx.run.units.get("finetune", [])
    if not units:
        return ""
    settings = unit_settings(units[0], read_json(units[0].path(rundir.RESULT)))
    mode, epochs = settings.get("mode", "linear"), settings.get("epochs")
    kind = "linear on a frozen encoder (the paper)" if mode == "linear" else "full fine-tuning (beyond the paper)"
    return f"Probes: {kind}" + (f", {epochs} epochs." if epochs is not None else ".")


def accuracy_section(ctx: ReportContext) -> None:
    section = Section("Transfer accuracy (Table 1)", "accuracy")
    reference = PAPER_ACCURACY if ctx.run.paper_tasks else None
    section.body += quantity_table(ctx, "probe_accuracy", "accuracy", reference)
    section.body += quantity_table(ctx, "knn_accuracy", "knn_accuracy")
    if not section.body:
        section.body.append(h.missing("no finished probe yet"))
    else:
        text = probe_description(ctx)
        if RANDOM in ctx.run.methods:
            text += f" Row {RANDOM}: a randomly initialized encoder of the same architecture."
        section.body.append(h.paragraph(text.strip()))
    ctx.sections.append(section)
