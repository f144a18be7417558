"""Loss-landscape figures: contours, filled contours or heat maps, 3-D surfaces, overlaid 1-D curves.

Every function takes surfaces keyed by method name (drawn side by side, in the mapping's order)
and uses **one** colour scale for all of them, so equal colours mean equal loss across methods.
The contour levels default to the original study's: 0.1 to 4 in steps of 0.3 for the loss.
Unfinished points of a partial surface (NaN) are left blank. Figures are plain ``Figure``
objects (not registered with pyplot) and are written as PNG when ``path`` is given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mpl_toolkits.mplot3d import Axes3D  # noqa: F401 - registers the "3d" projection

from ..analysis.surface_grid import Surface
from ..utils.io import atomic_path
from .palette import method_colors

log = logging.getLogger(__name__)

# Top of the loss contours and default top of the 3-D loss surfaces. Far from θ* the loss runs
# into the thousands, and a z axis scaled to that draws every basin as a flat floor.
LOSS_ZMAX = 4.0
LOSS_LEVELS = np.arange(0.1, LOSS_ZMAX, 0.3)
ACCURACY_LEVELS = np.linspace(0.0, 1.0, 11)
METRICS = ("loss", "accuracy")
FILLS = ("contourf", "heatmap")
CMAP = "viridis"


def _values(surface: Surface, metric: str) -> np.ndarray:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got '{metric}'")
    return np.asarray(surface.loss if metric == "loss" else surface.accuracy, dtype=np.float64)


def _checked_2d(surfaces: Mapping[str, Surface], metric: str) -> dict[str, np.ndarray]:
    if not surfaces:
        raise ValueError("need at least one surface")
    values = {}
    for method, surface in surfaces.items():
        if surface.ys is None:
            raise ValueError(f"{method}: a 1-D curve; use plot_landscape_1d")
        z = _values(surface, metric)
        if z.shape != (len(surface.ys), len(surface.xs)):
            raise ValueError(f"{method}: {metric} has shape {z.shape}, expected (len(ys), len(xs)) = ({len(surface.ys)}, {len(surface.xs)})")
        if len(surface.xs) < 2 or len(surface.ys) < 2:
            raise ValueError(f"{method}: a 2-D surface needs at least 2 points along each axis")
        values[method] = z
    return values


def _levels(levels: np.ndarray | None, metric: str) -> np.ndarray:
    levels = (LOSS_LEVELS if metric == "loss" else ACCURACY_LEVELS) if levels is None else np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1 or levels.size < 2 or np.any(np.diff(levels) <= 0):
        raise ValueError("levels must be an increasing sequence of at least 2 values")
    return levels


def _save(figure: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=120)
        log.info("wrote %s", path)
    return figure


def plot_landscape_contours(
    surfaces: Mapping[str, Surface],
    levels: np.ndarray | None = None,
    path: str | Path | None = None,
    *,
    metric: str = "loss",
    fill: str = "contourf",
    title: str | None = None,
) -> Figure:
    """Two rows × one column per method: contour lines at ``levels`` (top), filled contours or a heat map (bottom).

    Both rows of every method share one colour scale over ``levels`` (values outside are shown
    in the end colours) and one colour bar. The minimum θ* (0, 0) is marked.
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got '{fill}'")
    values = _checked_2d(surfaces, metric)
    levels = _levels(levels, metric)
    cmap = colormaps[CMAP]
    # One scale for every panel: the levels' bins for filled contours, their range for heat maps.
    norm = BoundaryNorm(levels, cmap.N, extend="both") if fill == "contourf" else Normalize(levels[0], levels[-1])

    figure = Figure(figsize=(3.4 * len(values) + 1.0, 6.4), layout="constrained")
    axes = figure.subplots(2, len(values), squeeze=False, sharex="col", sharey="col")
    for column, (method, z) in enumerate(values.items()):
        surface = surfaces[method]
        x, y = np.meshgrid(surface.xs, surface.ys)
        masked = np.ma.masked_invalid(z)
        lines_axis, fill_axis = axes[0, column], axes[1, column]
        lines = lines_axis.contour(x, y, masked, levels=levels, cmap=cmap, norm=Normalize(levels[0], levels[-1]), linewidths=1.0)
        lines_axis.clabel(lines, inline=True, fontsize=6, fmt="%.1f")
        if fill == "contourf":
            fill_axis.contourf(x, y, masked, levels=levels, cmap=cmap, norm=norm, extend="both")
        else:
            fill_axis.pcolormesh(x, y, masked, cmap=cmap, norm=norm, shading="nearest")
        lines_axis.set_title(method)
        fill_axis.set_xlabel("δ")
        for axis in (lines_axis, fill_axis):
            axis.plot([0], [0], marker="*", color="black", markersize=6)
            axis.set_aspect("equal", adjustable="box")
    axes[0, 0].set_ylabel("η")
    axes[1, 0].set_ylabel("η")
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    figure.colorbar(mappable, ax=axes, shrink=0.8, label=metric, extend="both" if fill == "contourf" else "neither")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_landscape_surfaces_3d(
    surfaces: Mapping[str, Surface],
    path: str | Path | None = None,
    *,
    metric: str = "loss",
    zmax: float | None = None,
    title: str | None = None,
) -> Figure:
    """One 3-D surface per method, side by side, with shared z limits and colour scale.

    Values above ``zmax`` are drawn at ``zmax``, so a steep rim does not flatten the basins.
    Default: :data:`LOSS_ZMAX` for the loss (the largest value if that is lower), the largest
    finite value for the accuracy.
    """
    values = _checked_2d(surfaces, metric)
    finite = np.concatenate([z[np.isfinite(z)] for z in values.values()])
    if finite.size == 0:
        raise ValueError("the surfaces hold no finite value")
    low = float(finite.min())
    if zmax is None:
        high = float(finite.max()) if metric == "accuracy" else min(float(finite.max()), LOSS_ZMAX)
        high = high if high > low else low + 1.0  # a flat surface still needs a z range
    elif float(zmax) > low:
        high = float(zmax)
    else:
        raise ValueError(f"zmax={zmax} must lie above the smallest value {low:.4g}")
    norm, cmap = Normalize(low, high), colormaps[CMAP]

    figure = Figure(figsize=(4.2 * len(values) + 1.0, 4.4), layout="constrained")
    axes = []
    for column, (method, z) in enumerate(values.items()):
        surface = surfaces[method]
        axis = figure.add_subplot(1, len(values), column + 1, projection="3d")
        x, y = np.meshgrid(surface.xs, surface.ys)
        clipped = np.minimum(z, high)  # NaN stays NaN and is not drawn
        axis.plot_surface(x, y, clipped, cmap=cmap, norm=norm, linewidth=0, antialiased=True, rcount=200, ccount=200)
        axis.set_zlim(low, high)
        for coordinate in (axis.xaxis, axis.yaxis, axis.zaxis):
            coordinate.set_major_locator(MaxNLocator(5))
        axis.tick_params(labelsize=7)
        axis.set_title(method)
        axis.set_xlabel("δ")
        axis.set_ylabel("η")
        axes.append(axis)
    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.7, label=metric)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_landscape_1d(
    curves: Mapping[str, Surface],
    path: str | Path | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Loss (left) and accuracy (right) against the step along one direction, one line per method."""
    if not curves:
        raise ValueError("need at least one curve")
    figure = Figure(figsize=(9.0, 3.6), layout="constrained")
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    colours = method_colors(curves)
    for method, curve in curves.items():
        if curve.ys is not None:
            raise ValueError(f"{method}: a 2-D surface; use plot_landscape_contours or plot_landscape_surfaces_3d")
        if np.shape(curve.loss) != (len(curve.xs),) or np.shape(curve.accuracy) != (len(curve.xs),):
            raise ValueError(f"{method}: loss and accuracy must have shape ({len(curve.xs)},)")
        loss_axis.plot(curve.xs, curve.loss, color=colours[method], label=method)
        accuracy_axis.plot(curve.xs, curve.accuracy, color=colours[method], label=method)
    loss_axis.set_ylabel("cross-entropy")
    accuracy_axis.set_ylabel("accuracy")
    accuracy_axis.set_ylim(-0.02, 1.02)
    for axis in (loss_axis, accuracy_axis):
        axis.set_xlabel("step along δ")
        axis.axvline(0.0, color="grey", linewidth=0.6, linestyle=":")
        axis.grid(True, alpha=0.3)
    loss_axis.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return _save(figure, path)
