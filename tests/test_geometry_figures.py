"""The geometry figures render, carry the expected elements and write non-empty files."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from contrastlab.report.geometry_figures import HtmlEmbed, inpca_map_html, method_colors, plot_inpca_map, plot_progress_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def trajectories(k: int, epochs: int = 6) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    rng = np.random.default_rng(0)
    runs = {f"{method}-seed{seed}": np.cumsum(rng.standard_normal((epochs, k)), axis=0)
            for method in ("simclr", "supcon", "supce") for seed in (0, 10)}
    return runs, {name: name.split("-")[0] for name in runs}


def legend_texts(figure: Figure) -> list[str]:
    return [text.get_text() for axes in figure.axes if axes.get_legend() for text in axes.get_legend().get_texts()]


def test_method_colors_are_stable_and_distinct():
    colors = method_colors(["supce", "SimCLR", "mystery", "supcon", "other"])
    assert colors == method_colors(["supce", "SimCLR", "mystery", "supcon", "other"])
    assert colors["SimCLR"] == method_colors(["simclr"])["simclr"]
    assert len(set(colors.values())) == 5


def test_inpca_map_3d_png(tmp_path):
    runs, methods = trajectories(3)
    path = tmp_path / "map.png"
    figure = plot_inpca_map(runs, methods, truth_coords=np.zeros(3), explained=[0.5, 0.2, 0.1],
                            eigenvalues=[1.0, -0.4, 0.2], path=path)
    assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 10_000
    (axes,) = figure.axes
    assert axes.name == "3d"
    assert {"simclr", "supcon", "supce", "P* (truth)"} <= set(legend_texts(figure))
    assert "λ=-0.4" in axes.get_ylabel() and "20.0%" in axes.get_ylabel()
    assert len(axes.lines) == len(runs)  # one path per run


def test_inpca_map_2d_when_two_components(tmp_path):
    runs, methods = trajectories(2)
    figure = plot_inpca_map(runs, methods, path=tmp_path / "map.png")
    assert figure.axes[0].name == "rectilinear"
    assert "P* (truth)" not in legend_texts(figure)


def test_inpca_map_html_snippet_and_page(tmp_path):
    runs, methods = trajectories(3)
    snippet = inpca_map_html(runs, methods, truth_coords=np.ones(3), explained=[0.5, 0.2, 0.1],
                             embed=HtmlEmbed(include_plotlyjs=False, div_id="map-task0"))
    assert snippet.lstrip().startswith("<div") and "<html" not in snippet
    assert 'id="map-task0"' in snippet and "scatter3d" in snippet
    assert "P* (truth)" in snippet and "simclr-seed10, epoch 5" in snippet
    path = tmp_path / "map.html"
    page = inpca_map_html(runs, methods, truth_coords=np.ones(3), embed=HtmlEmbed(full_page=True), path=path)
    assert "<html>" in page and page.rstrip().endswith("</html>") and path.read_text() == page
    assert len(page) > 1_000_000  # plotly.js embedded: the page works offline


def test_progress_curves_panels_bands_and_png(tmp_path):
    rng = np.random.default_rng(1)
    progress = {task: {method: rng.uniform(0, 1, (4, 11)) for method in ("simclr", "supcon", "supce")}
                for task in ("[0,1,2,3,4]", "[6,11,16,21,26]", "[56,58,62,66,68]")}
    progress["[95,96,97,98,99]"] = {"simclr": rng.uniform(0, 1, 11)}  # a single seed: no band
    path = tmp_path / "progress.png"
    figure = plot_progress_curves(progress, path=path, reference_final={"[0,1,2,3,4]": {"simclr": 0.72}})
    assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 10_000
    visible = [axes for axes in figure.axes if axes.get_visible()]
    assert [axes.get_title() for axes in visible] == list(progress)
    assert [len(axes.lines) for axes in visible] == [3, 3, 3, 1]
    bands = [sum(isinstance(c, PolyCollection) for c in axes.collections) for axes in visible]
    assert bands == [3, 3, 3, 0]
    mean_line = visible[0].lines[0].get_ydata()
    np.testing.assert_allclose(mean_line, progress["[0,1,2,3,4]"]["simclr"].mean(axis=0))
    assert "original study (final, raw-p)" in legend_texts(figure)


def test_progress_curves_draw_the_raw_formula_dashed():
    rng = np.random.default_rng(2)
    progress = {"t": {"simclr": rng.uniform(0, 1, (2, 5)), "supce": rng.uniform(0, 1, (2, 5))}}
    raw = {"t": {"simclr": rng.uniform(0, 1, (2, 5))}}
    figure = plot_progress_curves(progress, raw_progress=raw)
    lines = figure.axes[0].lines
    assert [line.get_linestyle() for line in lines] == ["-", "-", "--"]
    np.testing.assert_allclose(lines[2].get_ydata(), raw["t"]["simclr"].mean(axis=0))
    assert lines[2].get_color() == lines[0].get_color()  # the method's colour
    assert "raw-p formula" in legend_texts(figure)


@pytest.mark.parametrize("call, message", [
    (lambda: plot_inpca_map({}, {}), "empty"),
    (lambda: plot_inpca_map({"a": np.zeros((3, 3))}, {}), "no method"),
    (lambda: plot_inpca_map({"a": np.zeros((3, 3)), "b": np.zeros((3, 2))}, {"a": "x", "b": "x"}), "same k"),
    (lambda: plot_inpca_map({"a": np.zeros((3, 3))}, {"a": "x"}, truth_coords=np.zeros(2)), "truth_coords"),
    (lambda: plot_progress_curves({}), "empty"),
    (lambda: plot_progress_curves({"t": {"m": np.zeros((2, 3, 4))}}), "seeds, epochs"),
])
def test_figures_reject_inconsistent_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
