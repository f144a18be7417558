"""Sharpness: the Hessian's top eigenvalue and trace, scale-invariant (filter-normalized) and raw."""

from __future__ import annotations

from ... import rundir
from ...utils.io import read_json
from .. import html as h
from ..context import ReportContext, Section, unit_settings
from .common import quantity_table

TABLES = (("sharpness_top_normalized", "sharpness_top_eigenvalue_normalized"),
          ("sharpness_trace_normalized", "sharpness_trace_normalized"),
          ("sharpness_top", "sharpness_top_eigenvalue"),
          ("sharpness_trace", "sharpness_trace"))


def sharpness_section(ctx: ReportContext) -> None:
    section = Section("Sharpness", "sharpness")
    units = ctx.run.units.get("sharpness", [])
    if not units:
        return ctx.add_empty(section, "sharpness not computed (disabled or not run yet)")
    settings = unit_settings(units[0], read_json(units[0].path(rundir.SHARPNESS)))
    samples = settings.get("samples")
    params = "encoder + probe" if settings.get("params", "all") == "all" else "the probe"
    normalized = "sharpness_top_normalized" in ctx.results
    section.body.append(h.paragraph(
        f"Largest eigenvalue (Lanczos) and trace (Hutch++) of the Hessian of the mean cross-entropy over "
        f"{samples if samples is not None else 'all'} {settings.get('split', 'train')}-split samples, parameters: {params}; "
        "lower is flatter. "
        + ("The filter-normalized Hessian (each filter measured in units of its own weights) does not change when a "
           "BatchNorm network's weights are rescaled, so it compares methods fairly; the raw Hessian is shown too. "
           "Claim 1 uses the filter-normalized top eigenvalue." if normalized else
           "Only the raw Hessian was computed (it changes with the scale of the weights); claim 1 uses its top eigenvalue.")))
    for key, table_name in TABLES:
        section.body += quantity_table(ctx, key, table_name)
    ctx.sections.append(section)
