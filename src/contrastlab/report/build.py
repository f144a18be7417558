"""The study report, rebuilt from a run directory's stored results without recomputing anything.

Writes ``DIR/report/``: ``report.html`` (self-contained: figures inlined, the interactive InPCA
view with plotly.js inlined), ``figures/*.png`` and ``tables/*.csv`` / ``*.md``. Sections whose
units have not run (disabled, or a cut study) say so instead of failing.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ..config import StudyConfig
from ..errors import RunDirectoryError
from ..study.plan import RANDOM, plan_units, study_methods, task_name
from ..utils.io import load_array, read_json, write_text
from .tables import (
    PAPER_ACCURACY, PAPER_FINAL_PROGRESS, accuracy_values, finished, mean_std, paper_tasks_match,
    pivot_markdown, read_csv, seed_table, write_table,
)

log = logging.getLogger(__name__)

STAGES = ("pretrain", "finetune", "landscape", "sharpness", "robustness", "geometry")


def load_study_config(run_dir: Path) -> StudyConfig:
    """The resolved config stored at the top of a run directory."""
    study_file = run_dir / "study.json"
    if not study_file.exists():
        raise RunDirectoryError(f"{run_dir} holds no study (no study.json); run `contrastlab study --out {run_dir}` first")
    merged = OmegaConf.merge(OmegaConf.structured(StudyConfig), read_json(study_file)["config"])
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


@dataclass
class Section:
    title: str
    anchor: str
    body: list[str] = field(default_factory=list)  # HTML fragments


@dataclass
class ReportContext:
    run_dir: Path
    config: StudyConfig
    out: Path
    sections: list[Section] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # claim checks for the summary

    @property
    def figure_dir(self) -> Path:
        return self.out / "figures"

    @property
    def table_dir(self) -> Path:
        return self.out / "tables"


# ---- HTML helpers -------------------------------------------------------------------------

def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p class='missing'>no data</p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown_table(markdown: str) -> str:
    """Render the pipe tables this module writes (header, rule, rows) as HTML."""
    lines = [line.strip().strip("|").split("|") for line in markdown.strip().splitlines()]
    header, rows = [c.strip() for c in lines[0]], [[c.strip() for c in r] for r in lines[2:]]
    return _table([dict(zip(header, r)) for r in rows], header)


def _missing(what: str) -> str:
    return f"<p class='missing'>{html.escape(what)}</p>"


def _save_figure(ctx: ReportContext, figure, name: str) -> Path:
    from ..utils.io import atomic_path

    path = ctx.figure_dir / f"{name}.png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    ctx.figures.append(path)
    return path


# ---- sections -----------------------------------------------------------------------------

def _accuracy_section(ctx: ReportContext) -> None:
    c = ctx.config
    section = Section("Transfer accuracy (Table 1)", "accuracy")
    reference = PAPER_ACCURACY if paper_tasks_match(c) else None
    for field_name, name, title in (("val_accuracy", "accuracy", "Linear-probe validation accuracy (%)"),
                                    ("knn_accuracy", "knn_accuracy", "k-NN accuracy on frozen features (%)")):
        rows = seed_table(c, accuracy_values(c, ctx.run_dir, field_name), scale=100)
        markdown = pivot_markdown(rows, c, lambda r: f"{r['mean']:.2f} ± {r['std']:.2f}",
                                  reference if field_name == "val_accuracy" else None)
        write_table(ctx.table_dir, name, rows, markdown)
        section.body.append(f"<h3>{title}</h3>")
        section.body.append(_markdown_table(markdown) if rows else _missing("no finished probe yet"))
    mode = c.finetune.mode
    section.body.append(f"<p>Mean ± sample std over seeds {list(c.seeds)}; probes: "
                        f"{'linear on a frozen encoder (the paper)' if mode == 'linear' else 'full fine-tuning (beyond the paper)'}, "
                        f"{c.finetune.epochs} epochs. Row <code>{RANDOM}</code>: a randomly initialized encoder of the same architecture."
                        + (" In brackets: the original study's numbers." if reference else "") + "</p>")
    rows = seed_table(c, accuracy_values(c, ctx.run_dir, "val_accuracy"))
    if rows and c.random_init_baseline:
        by = {(r["method"], r["task"]): r["mean"] for r in rows}
        for method in c.methods:
            gains = [by[(method, t)] - by[(RANDOM, t)] for t in {r["task"] for r in rows} if (method, t) in by and (RANDOM, t) in by]
            if gains:
                ctx.notes.append(f"{method}: probe accuracy {100 * np.mean(gains):+.1f} points over the random-init encoder (mean over tasks).")
    ctx.sections.append(section)


def _pretraining_section(ctx: ReportContext) -> None:
    from .figures import plot_pretraining_curves

    section = Section("Pretraining", "pretraining")
    curves: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    for unit in finished(plan_units(ctx.config), ctx.run_dir, "pretrain"):
        metrics = unit.folder(ctx.run_dir) / "metrics.csv"
        if metrics.exists():
            curves[unit.method][unit.seed] = read_csv(metrics)
    if not curves:
        section.body.append(_missing("no finished pretraining run"))
    else:
        path = _save_figure(ctx, plot_pretraining_curves(curves), "pretraining")
        section.body.append(_img(path, "Pretraining loss per epoch (each method's own objective)"))
        rows = []
        for method, by_seed in curves.items():
            speeds = [float(r["images_per_s"]) for rows_ in by_seed.values() for r in rows_]
            seconds = [sum(float(r["seconds"]) for r in rows_) for rows_ in by_seed.values()]
            rows.append({"method": method, "final loss (mean over seeds)": f"{np.mean([float(r[-1]['loss']) for r in by_seed.values()]):.4f}",
                         "images/s (median)": f"{np.median(speeds):.0f}", "seconds per run (mean)": f"{np.mean(seconds):.1f}"})
        write_table(ctx.table_dir, "pretraining", rows)
        section.body.append(_table(rows))
    ctx.sections.append(section)


def _landscape_section(ctx: ReportContext) -> None:
    from ..analysis.landscape import load_surface
    from .landscape_figures import plot_landscape_1d, plot_landscape_contours, plot_landscape_surfaces_3d

    c = ctx.config
    section = Section("Loss landscapes (Fig. 1a)", "landscape")
    units = finished(plan_units(c), ctx.run_dir, "landscape")
    if not units:
        section.body.append(_missing("landscapes not computed (disabled or not run yet)"))
        ctx.sections.append(section)
        return
    first_seed = min(u.seed for u in units)
    section.body.append(f"<p>θ* + αδ + βη with filter-normalized Gaussian directions over "
                        f"{'encoder + probe' if c.analysis.landscape.params == 'all' else 'the probe'} (biases and BN parameters fixed), "
                        f"{c.analysis.landscape.grid}×{c.analysis.landscape.grid} grid on [−{c.analysis.landscape.span:g}, {c.analysis.landscape.span:g}]², "
                        f"mean cross-entropy on {c.finetune.analysis_split}-split samples. Shown: seed {first_seed}; contour levels 0.1 to 4 by 0.3 as in the original.</p>")
    rows = []
    for t, classes in enumerate(c.data.tasks):
        surfaces = {}
        for u in units:
            surface, meta = load_surface(u.folder(ctx.run_dir) / "surface.npy")
            centre = (len(surface.ys) // 2, len(surface.xs) // 2)
            if u.task == t:
                rows.append({"method": u.method, "seed": u.seed, "task": task_name(classes),
                             "loss at θ*": round(float(surface.loss[centre]), 4),
                             "mean loss in grid": round(float(np.nanmean(surface.loss)), 4),
                             "max loss in grid": round(float(np.nanmax(surface.loss)), 4)})
                if u.seed == first_seed:
                    surfaces[u.method] = surface
        if not surfaces:
            continue
        name = task_name(classes)
        section.body.append(f"<h3>{name}</h3>")
        for plot, suffix, caption in ((plot_landscape_contours, "contours", "contours"),
                                      (plot_landscape_surfaces_3d, "surface3d", "3-D surface"),
                                      (plot_landscape_1d, "1d", "1-D slice β = 0")):
            figure_input = surfaces if suffix != "1d" else {m: _row_slice(s) for m, s in surfaces.items()}
            path = _save_figure(ctx, plot(figure_input), f"landscape_{suffix}_{name}")
            section.body.append(_img(path, f"Loss landscape {caption}, {name}"))
    write_table(ctx.table_dir, "landscape", rows)
    section.body.append(_table(rows))
    ctx.sections.append(section)


def _row_slice(surface):
    """The β = 0 row of a 2-D surface as a 1-D surface."""
    from ..analysis.landscape import Surface

    middle = int(np.argmin(np.abs(surface.ys)))
    return Surface(surface.xs, None, surface.loss[middle], surface.accuracy[middle])


def _sharpness_section(ctx: ReportContext) -> None:
    c = ctx.config
    section = Section("Sharpness", "sharpness")
    units = finished(plan_units(c), ctx.run_dir, "sharpness")
    if not units:
        section.body.append(_missing("sharpness not computed (disabled or not run yet)"))
        ctx.sections.append(section)
        return
    top: dict[tuple[str, int], list[float]] = defaultdict(list)
    trace: dict[tuple[str, int], list[float]] = defaultdict(list)
    for u in units:
        result = read_json(u.folder(ctx.run_dir) / "sharpness.json")
        top[(u.method, u.task)].append(result["top_eigenvalues"][0])
        trace[(u.method, u.task)].append(result["trace"])
    rows_top, rows_trace = seed_table(c, top), seed_table(c, trace)
    fmt = lambda r: f"{r['mean']:.3g} ± {r['std']:.2g}"  # noqa: E731
    md_top, md_trace = pivot_markdown(rows_top, c, fmt), pivot_markdown(rows_trace, c, fmt)
    write_table(ctx.table_dir, "sharpness_top_eigenvalue", rows_top, md_top)
    write_table(ctx.table_dir, "sharpness_trace", rows_trace, md_trace)
    section.body.append("<p>Largest eigenvalue (Lanczos) and trace (Hutch++) of the Hessian of the mean cross-entropy "
                        f"over {c.analysis.sharpness.samples or 'all'} {c.finetune.analysis_split}-split samples, "
                        f"parameters: {'encoder + probe' if c.analysis.sharpness.params == 'all' else 'probe'}; lower is flatter.</p>")
    section.body += ["<h3>Top Hessian eigenvalue</h3>", _markdown_table(md_top), "<h3>Hessian trace</h3>", _markdown_table(md_trace)]
    per_method = {m: np.mean([r["mean"] for r in rows_top if r["method"] == m]) for m in c.methods if any(r["method"] == m for r in rows_top)}
    if len(per_method) > 1:
        ratio = max(per_method.values()) / max(min(per_method.values()), 1e-12)
        verdict = "similar" if ratio < 2 else "different"
        ctx.notes.append(f"Claim 1 (similarly flat minima): top eigenvalues per method (mean over tasks) "
                         + ", ".join(f"{m} {v:.3g}" for m, v in per_method.items())
                         + f"; max/min ratio {ratio:.2f} → {verdict} in this run.")
    ctx.sections.append(section)


def _geometry_section(ctx: ReportContext) -> None:
    from .geometry_figures import inpca_map_html, plot_inpca_map, plot_progress_curves

    c = ctx.config
    section = Section("Progress toward the truth and InPCA (Figs. 1b, 2a)", "geometry")
    units = finished(plan_units(c), ctx.run_dir, "geometry")
    if not units:
        section.body.append(_missing("progress / InPCA not computed (disabled or not run yet)"))
        ctx.sections.append(section)
        return
    progress: dict[str, dict[str, np.ndarray]] = {}
    progress_raw: dict[str, dict[str, np.ndarray]] = {}
    final_rows = []
    interactive_first = True
    for u in sorted(units, key=lambda u: u.task):
        name = task_name(c.data.tasks[u.task])
        rows = read_csv(u.folder(ctx.run_dir) / "progress.csv")
        for key, target in (("t_w", progress), ("t_w_raw", progress_raw)):
            if rows and key in rows[0]:
                by_method: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
                for r in rows:
                    by_method[r["method"]][int(r["seed"])].append(float(r[key]))
                target[name] = {m: np.array([seeds[s] for s in sorted(seeds)]) for m, seeds in by_method.items()}
        for method, values in progress.get(name, {}).items():
            mean, std = mean_std(values[:, -1])
            row = {"method": method, "task": name, "final t_w": round(mean, 4), "std": round(std, 4)}
            if name in progress_raw:
                raw_mean, _ = mean_std(progress_raw[name][method][:, -1])
                row["final t_w (raw-p formula)"] = round(raw_mean, 4)
            if paper_tasks_match(c) and method in PAPER_FINAL_PROGRESS:
                row["paper (raw-p)"] = PAPER_FINAL_PROGRESS[method][u.task]
            final_rows.append(row)

        inpca_path = u.folder(ctx.run_dir) / "inpca.npy"
        if not inpca_path.exists():  # a study of the random-init baseline alone has no map
            continue
        coords, meta = load_array(inpca_path)
        runs: dict[str, list[int]] = defaultdict(list)
        truth = None
        for i, point in enumerate(meta["points"]):
            if point["method"] == "truth":
                truth = coords[i]
            else:
                runs[f"{point['method']} seed {point['seed']}"].append(i)
        coords_by_run = {run: coords[idx] for run, idx in runs.items()}
        method_of_run = {run: run.split(" seed ")[0] for run in runs}
        kwargs = dict(truth_coords=truth, explained=meta["explained"], eigenvalues=meta["eigenvalues"])
        path = _save_figure(ctx, plot_inpca_map(coords_by_run, method_of_run, title=f"InPCA, {name}", **kwargs), f"inpca_{name}")
        section.body.append(f"<h3>InPCA of the probes' trajectories, {name}</h3>")
        section.body.append(_img(path, f"InPCA map {name}: each run from epoch 0 (light) to the last epoch (dark); ★ = truth P*. "
                                       "Pretrained methods only: the random-init baseline's probes would set the axes (its t_w is above)."))
        # plotly.js is inlined once (in the first interactive map); the later ones reuse it.
        section.body.append(inpca_map_html(coords_by_run, method_of_run, title=f"InPCA (interactive), {name}",
                                           include_plotlyjs=interactive_first, div_id=f"inpca-{name}", **kwargs))
        interactive_first = False
        eig = ", ".join(f"{v:+.4g}" for v in meta["eigenvalues"])
        section.body.append(f"<p>Eigenvalues of W (signed; negative = Minkowski directions): {eig}.</p>")
    path = _save_figure(ctx, plot_progress_curves(progress), "progress")
    section.body.insert(0, _img(path, "Progress t_w toward P* per probe epoch (mean ± std over seeds)"))
    section.body.insert(0, "<p>t_w = argmin over λ of the Bhattacharyya distance from the model's predictions to the geodesic from "
                           "P0 (uniform) to P* (the truth), on the task's analysis split. The original study's figure used a raw-p "
                           "formula (p instead of √p in the Bhattacharyya sum); its numbers are shown next to ours for comparison only.</p>")
    write_table(ctx.table_dir, "progress_final", final_rows)
    section.body.insert(2, _table(final_rows))
    if {"simclr", "supce"} <= set(c.methods):
        tasks = [n for n in progress if "simclr" in progress[n] and "supce" in progress[n]]
        wins = sum(progress[n]["simclr"][:, -1].mean() > progress[n]["supce"][:, -1].mean() for n in tasks)
        text = f"Claim 2 (SimCLR ends closer to P* than SupCE): final t_w higher for SimCLR on {wins} of {len(tasks)} tasks"
        if "supcon" in c.methods:
            slowest = sum(min(progress[n], key=lambda m: progress[n][m][:, -1].mean() if m != RANDOM else np.inf) == "supcon" for n in tasks)
            text += f"; SupCon lowest of the three methods on {slowest} of {len(tasks)}"
        ctx.notes.append(text + " (the paper: 3 of 4 and SupCon slowest).")
    ctx.sections.append(section)


def _robustness_section(ctx: ReportContext) -> None:
    from .robustness_figures import RobustnessData, plot_robustness_curves

    c = ctx.config
    section = Section("Adversarial robustness (Fig. 2b)", "robustness")
    units = finished(plan_units(c), ctx.run_dir, "robustness")
    if not units:
        section.body.append(_missing("robustness not computed (disabled or not run yet)"))
        ctx.sections.append(section)
        return
    space = c.analysis.robustness.space
    section.body.append(f"<p>Accuracy and cross-entropy under attack on {c.analysis.robustness.samples or 'all'} "
                        f"{c.finetune.analysis_split}-split samples, ε in {'pixel space (images clamped to [0, 1])' if space == 'pixel' else 'normalized space, unclamped (the original study)'}; "
                        f"PGD: {c.analysis.robustness.pgd_steps} steps, random start.</p>")
    for attack in c.analysis.robustness.attacks:
        curves: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for u in units:
            path = u.folder(ctx.run_dir) / f"{attack}.csv"
            if path.exists():
                curves[task_name(c.data.tasks[u.task])][u.method].append(read_csv(path))
        if not curves:
            continue
        data = {}
        rows = []
        for task, by_method in curves.items():
            data[task] = {}
            for method, seeds in by_method.items():
                eps = np.array([float(r["eps"]) for r in seeds[0]])
                acc = np.array([[float(r["accuracy"]) for r in s] for s in seeds])
                loss = np.array([[float(r["loss"]) for r in s] for s in seeds])
                data[task][method] = RobustnessData(eps, acc, loss)
                for j, e in enumerate(eps):
                    mean, std = mean_std(acc[:, j])
                    rows.append({"attack": attack, "task": task, "method": method, "eps_255": round(e * 255, 3),
                                 "accuracy": round(mean, 4), "std": round(std, 4), "loss": round(float(loss[:, j].mean()), 4)})
        write_table(ctx.table_dir, f"robustness_{attack}", rows)
        path = _save_figure(ctx, plot_robustness_curves(data, title=attack.upper()), f"robustness_{attack}")
        section.body.append(f"<h3>{attack.upper()}</h3>")
        section.body.append(_img(path, f"{attack.upper()}: accuracy and loss against ε·255 (mean ± std over seeds)"))
        if attack == "fgsm" and {"simclr", "supce"} <= set(c.methods):
            mids = {}
            for task, by_method in data.items():
                for method, d in by_method.items():
                    j = len(d.eps) // 2
                    mids.setdefault(method, []).append(d.accuracy[:, j].mean())
            ranking = sorted((m for m in mids if m != RANDOM), key=lambda m: -np.mean(mids[m]))
            ctx.notes.append("Claim 3 (SimCLR most robust to FGSM): mean FGSM accuracy at the middle ε, ranked: "
                             + ", ".join(f"{m} {np.mean(mids[m]):.3f}" for m in ranking) + ".")
    ctx.sections.append(section)


def stage_times(run_dir: Path, config: StudyConfig) -> list[dict]:
    """Wall time per stage: the sum over finished units of each kind (from their done.json)."""
    totals: dict[str, list[float]] = defaultdict(list)
    for unit in plan_units(config):
        marker = unit.folder(run_dir) / "done.json"
        if marker.exists():
            totals[unit.kind].append(float(read_json(marker).get("seconds", 0.0)))
    return [{"stage": s, "units": len(totals[s]), "seconds": round(sum(totals[s]), 1)} for s in STAGES if s in totals]


def _provenance_section(ctx: ReportContext) -> None:
    study = read_json(ctx.run_dir / "study.json")
    section = Section("Provenance", "provenance")
    times = stage_times(ctx.run_dir, ctx.config)
    write_table(ctx.table_dir, "stage_times", times)
    total = sum(t["seconds"] for t in times)
    section.body.append(f"<p>Config hash <code>{study['config_hash']}</code>; seeds {list(ctx.config.seeds)}; "
                        f"wall time of the finished units {total:.0f} s.</p>")
    section.body.append(_table(times))
    section.body.append(_table([{"item": k, "value": v} for k, v in study.get("provenance", {}).items()]))
    config_text = (ctx.run_dir / "config.yaml").read_text() if (ctx.run_dir / "config.yaml").exists() else json.dumps(study["config"], indent=2)
    section.body.append(f"<details><summary>Resolved configuration</summary><pre>{html.escape(config_text)}</pre></details>")
    ctx.sections.append(section)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}nav a{margin-right:1em}table{border-collapse:collapse;margin:1em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.85em;color:#555}.missing{color:#a33}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}.notes li{margin:.3em 0}
"""


def render_html(ctx: ReportContext) -> str:
    c = ctx.config
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in ctx.sections)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in ctx.notes) or "<li>no finished results to compare yet</li>"
    body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{"".join(s.body)}</section>' for s in ctx.sections)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>contrastlab: {html.escape(c.name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>contrastlab study: {html.escape(c.name)}</h1>"
            f"<p>{html.escape(c.data.pretrain)} → {html.escape(c.data.downstream)}, {html.escape(c.model.encoder)} width {c.model.width}, "
            f"methods {', '.join(study_methods(c))}, seeds {list(c.seeds)}, {len(c.data.tasks)} tasks. Built {stamp} from {html.escape(str(ctx.run_dir))}.</p>"
            f"<nav>{nav}</nav><section id='summary'><h2>What this run says</h2><ul class='notes'>{notes}</ul></section>{body}</body></html>")


def build_report(run_dir: str | Path) -> Path:
    """Rebuild ``run_dir/report`` from stored results; return the path of report.html."""
    run_dir = Path(run_dir)
    config = load_study_config(run_dir)
    ctx = ReportContext(run_dir=run_dir, config=config, out=run_dir / "report")
    for add in (_accuracy_section, _pretraining_section, _landscape_section, _sharpness_section, _geometry_section, _robustness_section, _provenance_section):
        add(ctx)
    # The summary belongs with the tables too, as a file a script can read.
    write_text(ctx.table_dir / "summary.md", "".join(f"- {n}\n" for n in ctx.notes))
    path = write_text(ctx.out / "report.html", render_html(ctx))
    _close_figures()
    return path


def _close_figures() -> None:
    import matplotlib.pyplot as plt

    plt.close("all")


def summary_text(summary) -> str:
    """The one-screen summary the CLI prints after a study."""
    lines = [f"study finished in {summary.seconds:.0f} s: {len(summary.ran)} units run, {len(summary.skipped)} already done"]
    accuracy = summary.run_dir / "report" / "tables" / "accuracy.md"
    if accuracy.exists():
        lines += ["", "probe accuracy (%), mean ± std over seeds:", accuracy.read_text().rstrip()]
    notes = summary.run_dir / "report" / "tables" / "summary.md"
    if notes.exists() and notes.read_text().strip():
        lines += ["", notes.read_text().rstrip()]
    if summary.report is not None:
        lines += ["", f"report: {summary.report}"]
    return "\n".join(lines)
