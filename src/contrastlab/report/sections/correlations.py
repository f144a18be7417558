"""Does flatness explain transfer and robustness? Rank correlations across method × seed × task.

Each trained model (method, pretraining seed, task) is one point: its sharpness (the
filter-normalized top Hessian eigenvalue; the raw one when only that was computed) against its
probe accuracy, final progress t_w and FGSM robustness score. Spearman's ρ with a percentile
bootstrap interval (stats.spearman_bootstrap); the random-init baseline has no sharpness and is
not a point.
"""

from __future__ import annotations

import math

from ... import stats
from .. import html as h
from ..context import ReportContext, Section
from ..palette import method_colors
from ..results import QUANTITIES
from ..tables import as_dict, write_table

TARGETS = ("probe_accuracy", "t_w", "fgsm_score")


def paired_points(results: dict, x_key: str, y_key: str) -> list[tuple[str, str, int, float, float]]:
    """(method, task, seed, x, y) for every model that has both quantities."""
    xs, ys = results.get(x_key, {}), results.get(y_key, {})
    points = []
    for key in sorted(set(xs) & set(ys)):
        for seed in sorted(set(xs[key]) & set(ys[key])):
            x, y = xs[key][seed], ys[key][seed]
            if math.isfinite(x) and math.isfinite(y):
                points.append((key[0], key[1], seed, float(x), float(y)))
    return points


def correlation_rows(results: dict, sharpness_key: str, confidence: float) -> tuple[list[dict], dict]:
    """One row per target quantity, and the points behind each."""
    rows, points = [], {}
    for target in TARGETS:
        found = paired_points(results, sharpness_key, target)
        if not found:
            continue
        points[target] = found
        c = as_dict(stats.spearman_bootstrap([p[3] for p in found], [p[4] for p in found], confidence=confidence))
        rows.append({"x": sharpness_key, "y": target, "n": int(c["n"]), "rho": c["rho"], "ci_low": c["ci_low"],
                     "ci_high": c["ci_high"], "p_value": c["p_value"],
                     "methods": len({p[0] for p in found}), "tasks": len({p[1] for p in found})})
    return rows, points


def plot_correlations(points: dict, sharpness_label: str, rows: list[dict]):
    """One scatter panel per target: sharpness (log x when positive) against the target, coloured by method."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * len(points), 3.6), layout="constrained")
    axes = figure.subplots(1, len(points), squeeze=False)[0]
    colors = method_colors(sorted({p[0] for pts in points.values() for p in pts}))
    by_target = {r["y"]: r for r in rows}
    for ax, (target, pts) in zip(axes, points.items()):
        for method, color in colors.items():
            mine = [p for p in pts if p[0] == method]
            if mine:
                ax.scatter([p[3] for p in mine], [p[4] for p in mine], s=18, color=color, label=method, alpha=0.8)
        if all(p[3] > 0 for p in pts):
            ax.set_xscale("log")
        r = by_target[target]
        ax.set_title(f"ρ = {r['rho']:.2f}" + (f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if math.isfinite(r["ci_low"]) else ""),
                     fontsize=9)
        ax.set_xlabel(sharpness_label, fontsize=8)
        ax.set_ylabel(QUANTITIES[target].title, fontsize=8)
    axes[0].legend(fontsize=7)
    return figure


def correlations_section(ctx: ReportContext) -> None:
    section = Section("Does flatness explain transfer and robustness?", "correlations")
    key = "sharpness_top_normalized" if "sharpness_top_normalized" in ctx.results else "sharpness_top"
    rows, points = correlation_rows(ctx.results, key, ctx.run.confidence)
    write_table(ctx.table_dir, "correlations", rows)
    if not rows:
        return ctx.add_empty(section, "no model has both a sharpness and a probe accuracy, t_w or FGSM score")
    label = QUANTITIES[key].title
    section.body.append(h.paragraph(
        f"The paper's hypothesis: flatter minima transfer better and are more robust. Each point is one trained model "
        f"(method × pretraining seed × task), x = {h.esc(label)}; Spearman's ρ with a {ctx.run.confidence:.0%} percentile "
        "bootstrap interval (2,000 resamples of the models). Flatness explaining transfer predicts ρ < 0 with probe accuracy, "
        "t_w and the FGSM score. Models of one task share their data and those of one seed their encoder, so the points are "
        "not independent: read the interval as optimistic. tables/correlations.csv holds the numbers."))
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else "—"  # noqa: E731
    section.body.append(h.table([{"against": QUANTITIES[r["y"]].label, "n models": r["n"], "ρ": fmt(r["rho"]),
                                  "interval": f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]", "p": fmt(r["p_value"])} for r in rows]))
    path = ctx.save_figure(plot_correlations(points, label, rows), "correlations")
    section.body.append(h.img(path, "Sharpness against probe accuracy, final t_w and FGSM robustness score"))
    ctx.sections.append(section)
