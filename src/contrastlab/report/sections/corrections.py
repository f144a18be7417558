"""What each correction changes: the original's formula next to the corrected one, on the same models.

Where both versions of a headline number come from the same trained models (progress t_w with
√p or raw p, the Hessian raw or filter-normalized, FGSM in pixel or normalized space, the InPCA
map with one or one-per-seed P*, landscape directions shared or per model), they are shown side
by side per method, with intervals and the paired difference. Corrections that change training
(input normalization, schedule end) need a second run: ``contrastlab report A --compare B``.
"""

from __future__ import annotations

from .. import html as h
from ..context import ReportContext, Section
from ..results import fgsm_space_scores, inpca_comparisons, landscape_seedings
from ..side_by_side import Versions, side_by_side_rows
from ..tables import write_table

INTRO = ("Each correction that can be evaluated on the same trained models, both ways: per method, the mean of each "
         "version with its {conf:.0%} t-interval and the paired difference (paired over tasks, each task's seeds "
         "averaged; over seeds with one task). Corrections that change training (input normalization statistics, the "
         "schedule's end) need a second run: <code>contrastlab report A --compare B</code>.")


def _pair(ctx: ReportContext, a, b, versions: Versions, note: str, csv_rows: list, difference: bool = True) -> list[str]:
    """The section's part for one correction: versions.quantity is its title."""
    run = ctx.run
    shown, raw = side_by_side_rows(a, b, run.methods, run.tasks, run.confidence, versions)
    if not shown:
        return []
    csv_rows += raw
    label_a, label_b = versions.label_a, versions.label_b
    columns = ["method", label_a, label_b] + ([f"{label_a} − {label_b}", "p"] if difference else []) + ["n"]
    return [f"<h3>{h.esc(versions.quantity)}</h3>", h.table(shown, columns), h.paragraph(note)]


def _inpca(found: dict[str, dict], tasks: list[str]) -> list[str]:
    rows = []
    for task in [t for t in tasks if t in found] + sorted(set(found) - set(tasks)):
        comparison = found[task]
        maps = comparison.get("maps", {})
        row = {"task": task, "used": comparison.get("used", "")}
        for copies in ("one", "per_seed"):
            m = maps.get(copies)
            if m:
                row[f"P* points ({copies})"] = m.get("truth_points")
                row[f"explained ({copies})"] = ", ".join(f"{v:.3f}" for v in m.get("explained", []))
                row[f"eigenvalues ({copies})"] = ", ".join(f"{v:+.3g}" for v in m.get("eigenvalues", []))
        row["Procrustes disparity"] = f"{float(comparison.get('procrustes_disparity', float('nan'))):.3g}"
        rows.append(row)
    if not rows:
        return []
    return ["<h3>InPCA inputs: one P* or one per seed</h3>", h.table(rows), h.paragraph(
        "The original embedded the truth P* once per seed; repeated points move no distance but weigh P* in the "
        "centring, which shifts the map and its spectrum. Explained: each component's |λ| over Σ|λ|. Procrustes "
        "disparity of the trajectory points of the two maps: 0 = the same map up to shift, rotation and scale; 1 at most.")]


def corrections_section(ctx: ReportContext) -> None:
    section = Section("What each correction changes", "corrections")
    section.body.append(h.paragraph(INTRO.format(conf=ctx.run.confidence)))
    results, csv_rows, body = ctx.results, [], []
    if "t_w" in results and "t_w_raw" in results:
        body += _pair(ctx, results["t_w"], results["t_w_raw"],
                      Versions("√p (corrected)", "raw p (original)", ".3f", "Progress t_w (final epoch): √p vs raw p"),
                      "The original's plotting script put p where the Bhattacharyya term needs √p; "
                      "the paper's final t_w were read off that formula.", csv_rows)
    spaces = fgsm_space_scores(ctx.run)
    if "pixel" in spaces and "normalized" in spaces:
        body += _pair(ctx, spaces["pixel"], spaces["normalized"],
                      Versions("pixel (corrected)", "normalized (original)", ".3f", "FGSM robustness score: pixel vs normalized space"),
                      "Normalized space: ε added to normalized inputs without clamping, a pixel budget of ε·std per channel "
                      "(≈ 0.2–0.3 ε), so the original's models look more robust than the stated ε.", csv_rows)
    if "sharpness_top_normalized" in results and "sharpness_top" in results:
        body += _pair(ctx, results["sharpness_top_normalized"], results["sharpness_top"],
                      Versions("filter-normalized", "raw", ".4g", "Top Hessian eigenvalue: filter-normalized vs raw"),
                      "Different units, so no difference is shown: compare the methods' order. The raw Hessian changes when a "
                      "BatchNorm network's filters are rescaled; the filter-normalized one does not.", csv_rows, difference=False)
    body += _inpca(inpca_comparisons(ctx.run), ctx.run.tasks)
    seedings = landscape_seedings(ctx.run)
    if "shared" in seedings and "per_model" in seedings:
        body += _pair(ctx, seedings["shared"], seedings["per_model"],
                      Versions("shared seed", "per-model seed", ".4g",
                               "Landscape flatness (mean loss rise over the grid): directions shared vs per model"),
                      "Mean loss over the grid minus the loss at θ*; the same model along directions drawn with one seed for "
                      "every model or one seed per model.", csv_rows)
    else:
        body.append(h.paragraph("Landscape direction seeding: only one seeding computed (set "
                                "analysis.landscape.compare_seeding=true to compute the other; it doubles the landscapes' cost)."))
    write_table(ctx.table_dir, "corrections", csv_rows)
    section.body += body if any(b.startswith("<h3>") for b in body) else [h.missing("no correction evaluated both ways in this run")]
    ctx.sections.append(section)
