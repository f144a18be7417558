"""Figures of the information-geometry analyses: the InPCA map of fine-tuning trajectories and
the progress t_w against epoch.

Plain functions over arrays: each returns the figure (a matplotlib ``Figure`` built without
pyplot, so no global state and no display is touched, or an HTML string for plotly) and writes
a file only when given a path. Colours identify the pretraining method, identically in every
figure (:func:`contrastlab.report.palette.method_colors`); within a trajectory, shades go from light (epoch 0) to the full
colour (last epoch).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..utils.io import atomic_path, write_text
from .palette import method_colors

_TRUTH_LABEL = "P* (truth)"
# Lightness of epoch 0 within a trajectory: share of the method colour mixed into white.
_FIRST_EPOCH_SHADE = 0.25


def _epoch_shades(color: str, n_epochs: int) -> np.ndarray:
    """RGB rows (n_epochs, 3): from a light tint of ``color`` (first epoch) to ``color`` itself (last)."""
    rgb = np.asarray(mcolors.to_rgb(color))
    share = np.linspace(_FIRST_EPOCH_SHADE, 1.0, n_epochs) if n_epochs > 1 else np.ones(1)
    return share[:, None] * rgb + (1.0 - share[:, None]) * np.ones(3)


def _check_map_inputs(coords_by_run: Mapping[str, np.ndarray], method_of_run: Mapping[str, str],
                      truth_coords: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray | None, int]:
    """Coordinates as float arrays (E+1, k), the truth as (k,), and k; ValueError on inconsistent input."""
    if not coords_by_run:
        raise ValueError("coords_by_run is empty: nothing to draw")
    runs = {name: np.asarray(points, dtype=np.float64) for name, points in coords_by_run.items()}
    dims = {points.shape[-1] if points.ndim == 2 else None for points in runs.values()}
    if None in dims or len(dims) != 1:
        shapes = {name: points.shape for name, points in runs.items()}
        raise ValueError(f"every run's coordinates must be (epochs, k) with the same k, got {shapes}")
    k = dims.pop()
    if k < 2:
        raise ValueError(f"an InPCA map needs at least 2 components, got {k}")
    missing = sorted(set(runs) - set(method_of_run))
    if missing:
        raise ValueError(f"method_of_run has no method for runs {missing}")
    truth = None
    if truth_coords is not None:
        truth = np.asarray(truth_coords, dtype=np.float64).reshape(-1)
        if truth.shape != (k,):
            raise ValueError(f"truth_coords must have {k} entries like the runs, got shape {np.shape(truth_coords)}")
    return runs, truth, k


def _axis_titles(n_axes: int, explained: Sequence[float] | None, eigenvalues: Sequence[float] | None) -> list[str]:
    titles = []
    for i in range(n_axes):
        parts = []
        if eigenvalues is not None and i < len(eigenvalues):
            parts.append(f"λ={float(eigenvalues[i]):+.3g}")
        if explained is not None and i < len(explained):
            parts.append(f"{100.0 * float(explained[i]):.1f}%")
        titles.append(f"InPCA {i + 1}" + (f" ({', '.join(parts)})" if parts else ""))
    return titles


def _save_figure(figure: Figure, path: str | os.PathLike, dpi: int) -> None:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")


def plot_inpca_map(coords_by_run: Mapping[str, np.ndarray], method_of_run: Mapping[str, str],
                   truth_coords: np.ndarray | None = None, explained: Sequence[float] | None = None,
                   eigenvalues: Sequence[float] | None = None, path: str | os.PathLike | None = None,
                   title: str | None = None, dpi: int = 150) -> Figure:
    """Static InPCA map of several runs' trajectories.

    coords_by_run: run name → (E+1, k) coordinates, one row per epoch (k ≥ 3 draws the first
    three components in 3-D, k = 2 a plane). method_of_run: run name → method (the colour).
    truth_coords: (k,) position of P*, drawn as a black star. explained / eigenvalues: per
    component, shown in the axis labels (a negative λ marks a Minkowski direction).
    Writes the figure to ``path`` (format from its suffix, e.g. .png) when given.
    """
    runs, truth, k = _check_map_inputs(coords_by_run, method_of_run, truth_coords)
    n_axes = 3 if k >= 3 else 2
    colors = method_colors(method_of_run[name] for name in runs)
    figure = Figure(figsize=(7.5, 6.5) if n_axes == 3 else (7.0, 5.5))
    if n_axes == 3:
        import mpl_toolkits.mplot3d  # noqa: F401  (registers the "3d" projection)

        axes = figure.add_subplot(projection="3d")
    else:
        axes = figure.add_subplot()
    flat_shading = {"depthshade": False} if n_axes == 3 else {}  # keep the epoch shades exact in 3-D
    for name, points in runs.items():
        color = colors[method_of_run[name]]
        xyz = [points[:, i] for i in range(n_axes)]
        axes.plot(*xyz, color=color, linewidth=0.8, alpha=0.6)
        axes.scatter(*xyz, c=_epoch_shades(color, len(points)), s=14, **flat_shading)
        # The final epoch gets a dark edge, so where each run ends reads at a glance.
        axes.scatter(*[[c[-1]] for c in xyz], c=[color], s=40, edgecolors="black", linewidths=0.8)
    handles = [Line2D([], [], color=color, marker="o", linewidth=0.8, label=method) for method, color in colors.items()]
    if truth is not None:
        axes.scatter(*[[truth[i]] for i in range(n_axes)], marker="*", s=220, c="black", label=_TRUTH_LABEL)
        handles.append(Line2D([], [], color="black", marker="*", markersize=12, linestyle="none", label=_TRUTH_LABEL))
    handles.append(Line2D([], [], color="none", marker="o", markerfacecolor="#cccccc", markeredgecolor="black",
                          label="last epoch (early epochs lighter)"))
    axes.legend(handles=handles, loc="upper left", fontsize=8)
    for setter, text in zip((axes.set_xlabel, axes.set_ylabel, getattr(axes, "set_zlabel", None)),
                            _axis_titles(n_axes, explained, eigenvalues)):
        if setter is not None:
            setter(text, fontsize=8)
    axes.set_title(title or "InPCA of fine-tuning trajectories")
    if path is not None:
        _save_figure(figure, path, dpi)
    return figure


@dataclass(frozen=True)
class HtmlEmbed:
    """How a plotly figure becomes HTML.

    full_page: a whole HTML page instead of a ``<div>`` snippet. include_plotlyjs is passed to
    plotly: True embeds the library inline (self-contained, works offline), False leaves it to the
    page that embeds several figures. div_id: the id of the figure's ``<div>``.
    """

    full_page: bool = False
    include_plotlyjs: bool | str = True
    div_id: str = "inpca-map"
    height_px: int = 650


def inpca_map_html(coords_by_run: Mapping[str, np.ndarray], method_of_run: Mapping[str, str],
                   truth_coords: np.ndarray | None = None, explained: Sequence[float] | None = None,
                   eigenvalues: Sequence[float] | None = None, path: str | os.PathLike | None = None,
                   title: str | None = None, embed: HtmlEmbed = HtmlEmbed()) -> str:
    """Interactive (plotly) InPCA map; same inputs as :func:`plot_inpca_map`.

    Returns a ``<div>`` snippet, or a whole HTML page with ``embed.full_page`` (see :class:`HtmlEmbed`).
    Hovering a point names its run and epoch. Writes the HTML to ``path`` when given.
    """
    import plotly.graph_objects as go

    runs, truth, k = _check_map_inputs(coords_by_run, method_of_run, truth_coords)
    three_d = k >= 3
    colors = method_colors(method_of_run[name] for name in runs)
    scatter = go.Scatter3d if three_d else go.Scatter
    figure = go.Figure()
    shown: set[str] = set()
    for name, points in runs.items():
        method = method_of_run[name]
        shades = [mcolors.to_hex(rgb) for rgb in _epoch_shades(colors[method], len(points))]
        axes = dict(x=points[:, 0], y=points[:, 1], **({"z": points[:, 2]} if three_d else {}))
        figure.add_trace(scatter(
            **axes, mode="lines+markers", name=method, legendgroup=method, showlegend=method not in shown,
            line=dict(color=colors[method], width=2), marker=dict(color=shades, size=4 if three_d else 7),
            text=[f"{name}, epoch {epoch}" for epoch in range(len(points))], hoverinfo="text"))
        shown.add(method)
    if truth is not None:
        axes = dict(x=[truth[0]], y=[truth[1]], **({"z": [truth[2]]} if three_d else {}))
        figure.add_trace(scatter(**axes, mode="markers", name=_TRUTH_LABEL, text=[_TRUTH_LABEL], hoverinfo="text",
                                 marker=dict(color="black", size=8 if three_d else 14,
                                             symbol="diamond" if three_d else "star")))
    titles = _axis_titles(3 if three_d else 2, explained, eigenvalues)
    layout = dict(title=title or "InPCA of fine-tuning trajectories", height=embed.height_px, legend=dict(itemsizing="constant"))
    if three_d:
        layout["scene"] = dict(xaxis_title=titles[0], yaxis_title=titles[1], zaxis_title=titles[2])
    else:
        layout.update(xaxis_title=titles[0], yaxis_title=titles[1])
    figure.update_layout(**layout)
    html = figure.to_html(full_html=embed.full_page, include_plotlyjs=embed.include_plotlyjs, div_id=embed.div_id,
                          default_height=f"{embed.height_px}px")
    if path is not None:
        write_text(path, html)
    return html


def _curves(values, task: str, method: str) -> np.ndarray:
    curves = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if curves.ndim != 2:
        raise ValueError(f"progress[{task!r}][{method!r}] must be (seeds, epochs), got shape {curves.shape}")
    return curves


def _draw_progress_panel(axes, task: str, by_method: Mapping[str, np.ndarray], raw_by_method: Mapping[str, np.ndarray],
                         reference: Mapping[str, float] | None, colors: Mapping[str, str]) -> None:
    """One task's panel: mean ± std per method, the reference final values, then the raw-p curves dashed."""
    for method, values in by_method.items():
        curves = _curves(values, task, method)
        epochs = np.arange(curves.shape[1])
        mean = curves.mean(axis=0)
        color = colors[method]
        axes.plot(epochs, mean, color=color)
        if curves.shape[0] >= 2:
            spread = curves.std(axis=0, ddof=1)
            axes.fill_between(epochs, mean - spread, mean + spread, color=color, alpha=0.2, linewidth=0)
        if reference is not None and method in reference:
            axes.scatter([epochs[-1]], [reference[method]], s=50, facecolors="none",
                         edgecolors=color, linewidths=1.5, zorder=3)
    for method, values in raw_by_method.items():
        curves = _curves(values, task, method)
        axes.plot(np.arange(curves.shape[1]), curves.mean(axis=0), color=colors[method],
                  linestyle="--", linewidth=1.0)


def _progress_legend(colors: Mapping[str, str], with_raw: bool, with_reference: bool) -> list[Line2D]:
    handles = [Line2D([], [], color=color, label=method) for method, color in colors.items()]
    if with_raw:
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1.0, label="raw-p formula"))
    if with_reference:
        handles.append(Line2D([], [], color="black", marker="o", markerfacecolor="none", linestyle="none",
                              label="original study (final, raw-p)"))
    return handles


def plot_progress_curves(progress: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike | None = None,
                         reference_final: Mapping[str, Mapping[str, float]] | None = None,
                         title: str | None = None, dpi: int = 150,
                         raw_progress: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> Figure:
    """Progress t_w against epoch, one panel per task, one curve per method.

    progress: task name → method → (seeds, E+1) array of t_w (a 1-D (E+1,) array is one seed).
    Each curve is the mean over seeds with a band of ± one standard deviation (sample std,
    drawn when there are at least 2 seeds). raw_progress: the same for t_w computed with the
    original script's raw-p formula, drawn dashed (mean only) after the solid curves.
    reference_final: task → method → a final t_w to mark at the last epoch with a hollow marker
    (e.g. values read off the original study's figure, which used the raw-p formula). Writes the
    figure to ``path`` when given.
    """
    if not progress:
        raise ValueError("progress is empty: nothing to draw")
    tasks = list(progress)
    colors = method_colors([method for task in tasks for method in progress[task]]
                           + [method for task in tasks for method in ((raw_progress or {}).get(task) or {})])
    n_cols = min(len(tasks), 4)
    n_rows = -(-len(tasks) // n_cols)
    figure = Figure(figsize=(3.6 * n_cols, 3.2 * n_rows), layout="constrained")
    grid = figure.subplots(n_rows, n_cols, sharey=True, squeeze=False)
    for index, task in enumerate(tasks):
        axes = grid[index // n_cols][index % n_cols]
        _draw_progress_panel(axes, task, progress[task], ((raw_progress or {}).get(task) or {}),
                             None if reference_final is None else reference_final.get(task, {}), colors)
        axes.set_title(str(task), fontsize=9)
        axes.set_xlabel("epoch")
        axes.set_ylim(0.0, 1.0)
        axes.grid(alpha=0.3)
        if index % n_cols == 0:
            axes.set_ylabel("progress $t_w$")
    for index in range(len(tasks), n_rows * n_cols):  # unused cells of the grid
        grid[index // n_cols][index % n_cols].set_visible(False)
    handles = _progress_legend(colors, bool(raw_progress), reference_final is not None)
    grid[0][0].legend(handles=handles, fontsize=7, loc="lower right", title="mean ± std over seeds", title_fontsize=7)
    if title:
        figure.suptitle(title)
    if path is not None:
        _save_figure(figure, path, dpi)
    return figure
