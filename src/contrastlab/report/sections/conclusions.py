"""What this run says: the paper's three claims tested on the run's own numbers (report/claims.py)."""

from __future__ import annotations

import math

from ... import rundir
from ...utils.io import read_json, write_text
from .. import html as h
from ..claims import claims_rows
from ..context import ReportContext, Section, unit_settings
from ..tables import write_table

SHARPNESS = (("sharpness_top_normalized", "top eigenvalue of the filter-normalized Hessian"),
             ("sharpness_top", "top eigenvalue of the raw Hessian"))


def _attack_space(ctx: ReportContext) -> str:
    units = ctx.run.units.get("robustness", [])
    if not units:
        return "pixel"
    sidecar = units[0].path(rundir.ROBUSTNESS)
    return str(unit_settings(units[0], read_json(sidecar) if sidecar.exists() else {}).get("space", "pixel"))


def claim_rows(ctx: ReportContext) -> list[dict]:
    """The claims table: every row of :func:`claims_rows` on this run's per-seed results."""
    run, claims = ctx.run, ctx.run.report.claims
    key, quantity = next(((k, q) for k, q in SHARPNESS if k in ctx.results), SHARPNESS[-1])
    progress = {f: ctx.curves[f] for f in ("t_w", "t_w_raw") if ctx.curves.get(f)}
    fgsm = {k: {s: c[:2] for s, c in seeds.items()} for k, seeds in ctx.curves.get("fgsm", {}).items()} or None
    kwargs = dict(sharpness=ctx.results.get(key), sharpness_quantity=quantity, progress=progress or None,
                  attack_space=_attack_space(ctx), confidence=run.confidence, margin=claims.flatness_margin,
                  eps_max=claims.robustness_eps_max_255 / 255)
    try:
        return claims_rows(robustness=fgsm, **kwargs)
    except ValueError as error:  # an FGSM curve that cannot be scored (e.g. its ε grid stops short of ε_max)
        rows = claims_rows(robustness=None, **kwargs)
        for row in rows:
            if row["claim"] == "3":
                row["note"] = f"FGSM results cannot be scored: {error}"
        return rows


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else "—"


def _shown(row: dict) -> dict:
    interval = (f" [{_number(row['ci_low'])}, {_number(row['ci_high'])}]"
                if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]) else "")
    return {"claim": row["claim"], "statement": row["text"], "verdict": row["verdict"],
            "statistic": row["statistic"], "estimate [CI]": _number(row["estimate"]) + interval,
            "n": f"{row['n']} {row['unit']}".strip(), "p": _number(row["p_value"]), "rule": row["rule"], "note": row["note"]}


def summary_lines(rows: list[dict]) -> list[str]:
    """One line per claim row, for tables/summary.md and the CLI's summary."""
    return [f"claim {r['claim']} {r['verdict']}: {r['text']} ({r['statistic']} {_shown(r)['estimate [CI]']}"
            f"{', ' + r['note'] if r['note'] else ''})" for r in rows]


def conclusions_section(ctx: ReportContext) -> None:
    run = ctx.run
    section = Section("What this run says", "summary")
    rows = claim_rows(ctx)
    write_table(ctx.table_dir, "claims", rows)
    write_text(ctx.table_dir / "summary.md", "".join(f"- {line}\n" for line in summary_lines(rows)))
    section.body.append(h.paragraph(
        f"The original study's three claims, each tested on this run's numbers at {run.confidence:.0%} confidence "
        f"(thresholds from report.claims: flatness margin {run.report.claims.flatness_margin:g}, FGSM budget "
        f"ε_max = {run.report.claims.robustness_eps_max_255:g}/255). A verdict is 'supported' or 'contradicted' only "
        "when the interval decides it; otherwise 'inconclusive' (more seeds or tasks would decide). Pairs are tasks "
        "when two or more tasks are shared, else seeds."))
    section.body.append(h.table([_shown(r) for r in rows], ["claim", "statement", "verdict", "statistic", "estimate [CI]", "n", "p", "note"],
                                cell_class="verdict"))
    section.body.append(h.details("decision rules", h.table([_shown(r) for r in rows], ["claim", "rule"])))
    if ctx.notes:
        section.body.append("<ul class='notes'>" + "".join(f"<li>{h.esc(n)}</li>" for n in ctx.notes) + "</ul>")
    ctx.sections.append(section)
