"""plot_task_distributions: renders headless for 50 tasks, one panel per quantity, method colours."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib import colors as mcolors

from contrastlab.report.distribution_figures import plot_task_distributions
from contrastlab.report.geometry_figures import method_colors

METHODS = ["simclr", "supcon", "supce", "random"]


def _values(n_tasks: int = 50) -> dict[str, dict[str, list[float]]]:
    rng = np.random.default_rng(0)
    return {q: {m: list(rng.normal(0.5 + 0.1 * i, 0.05, n_tasks)) for i, m in enumerate(METHODS)}
            for q in ("final accuracy", "final t_w")}


def test_renders_50_tasks_to_png():
    figure = plot_task_distributions(_values(), title="over 50 tasks", ylabel="value")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG") and len(buffer.getvalue()) > 10_000
    assert len(figure.axes) == 2 and figure.axes[1].get_title() == "final t_w"
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == [f"{m} (50)" for m in METHODS]


def test_points_use_method_colours_and_are_deterministic():
    values = _values(10)
    figure = plot_task_distributions(values, title="t", ylabel="y")
    colours = method_colors(METHODS)
    strips = figure.axes[0].collections
    assert len(strips) == len(METHODS)
    for strip, method in zip(strips, METHODS):
        assert mcolors.to_hex(strip.get_facecolor()[0], keep_alpha=False) == colours[method]
        assert np.allclose(np.sort(strip.get_offsets()[:, 1]), np.sort(values["final accuracy"][method]))
    again = plot_task_distributions(values, title="t", ylabel="y")
    assert np.array_equal(again.axes[0].collections[0].get_offsets(), strips[0].get_offsets())


def test_missing_and_non_finite_values():
    figure = plot_task_distributions({"q": {"simclr": [1.0, float("nan"), 2.0], "supce": []}}, title="t", ylabel="y")
    figure.savefig(io.BytesIO(), format="png")
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["simclr (2)", "supce (0)"]
    with pytest.raises(ValueError, match="empty"):
        plot_task_distributions({}, title="t", ylabel="y")
