"""Landscape figures: PNGs are written, methods share one colour scale, wrong shapes are errors."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.contour import ContourSet

from contrastlab.analysis.surface_grid import Surface
from contrastlab.report.landscape_figures import (
    LOSS_LEVELS,
    plot_landscape_1d,
    plot_landscape_contours,
    plot_landscape_surfaces_3d,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def bowl(sharpness: float, n: int = 11) -> Surface:
    """A quadratic basin: loss 0.2 + s·(x² + y²), accuracy falling away from the centre."""
    xs = ys = np.linspace(-1.0, 1.0, n)
    x, y = np.meshgrid(xs, ys)
    loss = 0.2 + sharpness * (x**2 + y**2)
    return Surface(xs, ys, loss, np.clip(1.0 - 0.2 * loss, 0, 1))


def curve(sharpness: float) -> Surface:
    xs = np.linspace(-1.0, 1.0, 21)
    loss = 0.2 + sharpness * xs**2
    return Surface(xs, None, loss, np.clip(1.0 - 0.2 * loss, 0, 1))


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000


SURFACES = {"SimCLR": bowl(1.0), "SupCon": bowl(3.0), "SupCE": bowl(8.0)}


@pytest.mark.parametrize("fill", ["contourf", "heatmap"])
def test_contour_figure_is_written_with_one_colour_scale(tmp_path, fill):
    path = tmp_path / "contours.png"
    figure = plot_landscape_contours(SURFACES, path=path, fill=fill, title="task 0")
    assert_png(path)
    panels = [axis for axis in figure.axes if axis.get_label() != "<colorbar>"]
    colourbars = [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]
    assert len(panels) == 6 and len(colourbars) == 1  # 2 rows x 3 methods, one shared colour bar
    fills = [c for axis in panels for c in axis.collections if isinstance(c, QuadMesh) or (isinstance(c, ContourSet) and c.filled)]
    assert len(fills) == 3
    limits = {(c.norm.vmin, c.norm.vmax) for c in fills}
    assert limits == {(LOSS_LEVELS[0], LOSS_LEVELS[-1])}  # the same scale for every method
    line_sets = [c for axis in panels for c in axis.collections if isinstance(c, ContourSet) and not c.filled]
    assert len(line_sets) == 3 and all(np.allclose(c.levels, LOSS_LEVELS) for c in line_sets)


def test_accuracy_contours_and_partial_surfaces(tmp_path):
    partial = bowl(2.0)
    loss = partial.loss.copy()
    loss[5:] = np.nan  # an unfinished resume file
    plot_landscape_contours({"partial": Surface(partial.xs, partial.ys, loss, partial.accuracy)}, path=tmp_path / "p.png")
    assert_png(tmp_path / "p.png")
    plot_landscape_contours(SURFACES, metric="accuracy", path=tmp_path / "a.png")
    assert_png(tmp_path / "a.png")


def test_3d_surfaces_share_z_limits_and_colours(tmp_path):
    path = tmp_path / "surfaces.png"
    figure = plot_landscape_surfaces_3d(SURFACES, path=path, zmax=3.0)
    assert_png(path)
    axes = [axis for axis in figure.axes if axis.name == "3d"]
    assert len(axes) == 3
    assert {axis.get_zlim() for axis in axes} == {(0.2, 3.0)}
    norms = {(c.norm.vmin, c.norm.vmax) for axis in axes for c in axis.collections}
    assert norms == {(0.2, 3.0)}
    with pytest.raises(ValueError, match="zmax"):
        plot_landscape_surfaces_3d(SURFACES, zmax=0.1)


def test_3d_loss_is_clipped_at_the_contour_range_by_default():
    steep = {name: Surface(s.xs, s.ys, s.loss + 1000 * (s.loss - s.loss.min()), s.accuracy) for name, s in SURFACES.items()}
    figure = plot_landscape_surfaces_3d(steep)
    assert {axis.get_zlim()[1] for axis in figure.axes if axis.name == "3d"} == {4.0}
    figure = plot_landscape_surfaces_3d(SURFACES, metric="accuracy")
    top = max(float(np.nanmax(s.accuracy)) for s in SURFACES.values())
    assert {axis.get_zlim()[1] for axis in figure.axes if axis.name == "3d"} == {top}


def test_1d_curves_are_overlaid(tmp_path):
    path = tmp_path / "curves.png"
    figure = plot_landscape_1d({"SimCLR": curve(1.0), "SupCE": curve(4.0)}, path=path)
    assert_png(path)
    loss_axis, accuracy_axis = figure.axes
    assert [line.get_label() for line in loss_axis.get_lines() if not line.get_label().startswith("_")] == ["SimCLR", "SupCE"]
    np.testing.assert_allclose(loss_axis.get_lines()[1].get_ydata(), curve(4.0).loss)


def test_wrong_shapes_are_errors():
    with pytest.raises(ValueError, match="1-D curve"):
        plot_landscape_contours({"a": curve(1.0)})
    with pytest.raises(ValueError, match="2-D surface"):
        plot_landscape_1d({"a": bowl(1.0)})
    broken = bowl(1.0)
    with pytest.raises(ValueError, match="expected"):
        plot_landscape_surfaces_3d({"a": Surface(broken.xs, broken.ys, broken.loss[:, :-1], broken.accuracy)})
    with pytest.raises(ValueError, match="at least one"):
        plot_landscape_contours({})
    with pytest.raises(ValueError, match="increasing"):
        plot_landscape_contours(SURFACES, levels=[1.0, 0.5])
    with pytest.raises(ValueError, match="fill"):
        plot_landscape_contours(SURFACES, fill="surface")
