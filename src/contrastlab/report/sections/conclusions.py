"""What this run says: the paper's three claims and the families' claims, tested on the run's own
numbers (report/claims.py, report/family_claims.py), decided together (Holm) at the report's level."""

from __future__ import annotations

import math

from ... import rundir
from ...utils.io import read_json, write_text
from .. import html as h
from ..claim_table import claims_rows
from ..claims import INCONCLUSIVE, NOT_BY_SEEDS, NOT_DECIDABLE, VERDICTS, ClaimInputs, ClaimSettings, is_tested
from ..context import ReportContext, Section, run_families, unit_settings
from ..looks import Look, current_look, earlier_verdicts
from ..tables import write_table

SHARPNESS = (("sharpness_top_normalized", "top eigenvalue of the filter-normalized Hessian"),
             ("sharpness_top", "top eigenvalue of the raw Hessian"))


def _attack_space(ctx: ReportContext) -> str:
    units = ctx.run.units.get("robustness", [])
    if not units:
        return "pixel"
    sidecar = units[0].path(rundir.ROBUSTNESS)
    return str(unit_settings(units[0], read_json(sidecar) if sidecar.exists() else {}).get("space", "pixel"))


def claim_settings(ctx: ReportContext, look: Look | None) -> ClaimSettings:
    """The claims' settings: report.claims, the report's confidence and, in a sequential study (``look``),
    the look's α and the verdicts earlier looks reached."""
    run, claims = ctx.run, ctx.run.report.claims
    return ClaimSettings(confidence=run.confidence, margin=claims.flatness_margin, accuracy_margin=claims.accuracy_margin,
                         eps_max=claims.robustness_eps_max_255 / 255, attack_space=_attack_space(ctx),
                         adjust=claims.adjust, look_alpha=look.alpha if look else None,
                         earlier=earlier_verdicts(run.study, len(run.seeds)) if look else ())


def claim_rows(ctx: ReportContext, settings: ClaimSettings) -> list[dict]:
    """The claims table: every row of :func:`claims_rows` on this run's per-seed results."""
    key, quantity = next(((k, q) for k, q in SHARPNESS if k in ctx.results), SHARPNESS[-1])
    progress = {f: ctx.curves[f] for f in ("t_w", "t_w_raw") if ctx.curves.get(f)}
    fgsm = {k: {s: c[:2] for s, c in seeds.items()} for k, seeds in ctx.curves.get("fgsm", {}).items()} or None
    inputs = ClaimInputs(sharpness=ctx.results.get(key), sharpness_quantity=quantity, progress=progress or None,
                         robustness=fgsm, accuracy=ctx.results.get("probe_accuracy"), families=run_families(ctx.run))
    try:
        return claims_rows(inputs, settings)
    except ValueError as error:  # an FGSM curve that cannot be scored (e.g. its ε grid stops short of ε_max)
        inputs.robustness = None
        rows = claims_rows(inputs, settings)
        for row in rows:
            if row["claim"] == "3":
                row["note"] = f"FGSM results cannot be scored: {error}"
        return rows


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else "—"


def _to_decide(row: dict) -> str:
    seeds, tasks = str(row.get("seeds_to_decide") or ""), str(row.get("tasks_to_decide") or "")
    if row["verdict"] != INCONCLUSIVE or not (seeds or tasks):
        return ""
    if seeds == NOT_DECIDABLE:
        return NOT_DECIDABLE
    seeds_text = f"{seeds} seeds per task" if seeds.isdigit() else seeds
    tasks_text = f"{tasks} tasks" if tasks.isdigit() else tasks
    return f"{seeds_text}; or {tasks_text}"


def _shown(row: dict) -> dict:
    interval = (f" [{_number(row['ci_low'])}, {_number(row['ci_high'])}]"
                if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]) else "")
    return {"claim": row["claim"], "statement": row["text"], "verdict": row["verdict"],
            "statistic": row["statistic"], "estimate [CI]": _number(row["estimate"]) + interval,
            "n": f"{row['n']} {row['unit']}".strip(), "p": _number(row["p_value"]),
            "p (adjusted)": _number(row.get("p_adjusted", math.nan)), "to decide (80% power)": _to_decide(row),
            "rule": row["rule"], "note": row["note"]}


def summary_lines(rows: list[dict]) -> list[str]:
    """One line per claim row, for tables/summary.md and the CLI's verbose summary."""
    return [f"claim {r['claim']} {r['verdict']}: {r['text']} ({r['statistic']} {_shown(r)['estimate [CI]']}"
            f"{', ' + r['note'] if r['note'] else ''}"
            f"{'; to decide: ' + _to_decide(r) if _to_decide(r) else ''})" for r in rows]


def verdict_counts(rows: list[dict]) -> str:
    """"1 supported, 0 contradicted, 13 inconclusive (seeds to decide: 3–9 for 10; more tasks for 2; not decidable
    at this effect: 1)": the console's one line. Each inconclusive claim counts once, by what would decide it."""
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    text = ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    needs = [str(r.get("seeds_to_decide") or "") for r in rows if r["verdict"] == INCONCLUSIVE]
    sizes = sorted(int(s) for s in needs if s.isdigit())
    parts = []
    if sizes:
        span = f"{sizes[0]}–{sizes[-1]}" if sizes[0] != sizes[-1] else f"{sizes[0]}"
        parts.append(f"seeds to decide: {span}" + (f" for {len(sizes)}" if len(sizes) < len(needs) else ""))
    if needs.count(NOT_BY_SEEDS):
        parts.append(f"more tasks for {needs.count(NOT_BY_SEEDS)}")
    if needs.count(NOT_DECIDABLE):
        parts.append(f"{NOT_DECIDABLE}: {needs.count(NOT_DECIDABLE)}")
    return text + (f" ({'; '.join(parts)})" if parts else "")


def _method_paragraph(ctx: ReportContext, rows: list[dict], settings: ClaimSettings, look: Look | None) -> str:
    claims = ctx.run.report.claims
    tested = sum(is_tested(r["test"], float(r["p_value"])) for r in rows)
    adjust = (f"Holm's step-down procedure over all {tested} tested claims (family-wise error ≤ {settings.alpha:.3g}): "
              "a verdict needs p_adjusted < α, and each interval is drawn at its claim's Holm level"
              if claims.adjust == "holm" else f"each of the {tested} tested claims at α = {settings.alpha:.3g}, "
                                              "without adjustment for multiplicity (report.claims.adjust: none)")
    return (f"The original study's three claims, and the families' claims (paired over tasks, each family's value "
            f"on a task the mean of its methods), each tested on this run's numbers. {tested} claims were tested, "
            f"decided with {adjust}. "
            + (look.text() + ". " if look else "")
            + f"Thresholds from report.claims: flatness margin {claims.flatness_margin:g}, accuracy margin "
            f"±{claims.accuracy_margin:g} points, FGSM budget ε_max = {claims.robustness_eps_max_255:g}/255. "
            "A verdict is 'supported' or 'contradicted' only when the test decides it; otherwise 'inconclusive'. "
            "An equivalence (TOST) claim's p-value, the one adjusted, is its equivalence p-value, or where the "
            "estimate lies beyond the margin the p-value of 'beyond the margin'. "
            "For each inconclusive claim, 'to decide' estimates the seeds per task (or, at the current seeds, the "
            "tasks) at which the same rule would decide it with 80% power if the observed effect and spreads were "
            f"the truth ('{NOT_DECIDABLE}' where the effect sits at the rule's boundary, '{NOT_BY_SEEDS}' where the "
            "spread across tasks dominates). Pairs are tasks when two or more tasks are shared, else seeds.")


def conclusions_section(ctx: ReportContext) -> None:
    section = Section("What this run says", "claims")
    run = ctx.run
    look = current_look(run.study, len(run.seeds), 1.0 - run.confidence)
    settings = claim_settings(ctx, look)
    rows = claim_rows(ctx, settings)
    write_table(ctx.table_dir, "claims", rows)
    write_text(ctx.table_dir / "summary.md", "".join(f"- {line}\n" for line in summary_lines(rows)))
    write_text(ctx.table_dir / "verdicts.txt", verdict_counts(rows) + "\n")
    section.body.append(h.paragraph(_method_paragraph(ctx, rows, settings, look)))
    columns = ["claim", "statement", "verdict", "statistic", "estimate [CI]", "n", "p", "p (adjusted)",
               "to decide (80% power)", "note"]
    section.body.append(h.table([_shown(r) for r in rows], columns, cell_class="verdict"))
    section.body.append(h.details("decision rules", h.table([_shown(r) for r in rows], ["claim", "rule"])))
    if ctx.notes:
        section.body.append("<ul class='notes'>" + "".join(f"<li>{h.esc(n)}</li>" for n in ctx.notes) + "</ul>")
    ctx.sections.append(section)
