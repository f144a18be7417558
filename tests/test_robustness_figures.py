"""The robustness figure: a PNG with accuracy/loss rows, one column per task, mean over seeds."""

from __future__ import annotations

import numpy as np
import pytest

from contrastlab.analysis.attacks import RobustnessCurve
from contrastlab.report.robustness_figures import RobustnessData, plot_robustness_curves, stack_curves

EPS = np.arange(0, 16) / 255


def _method_data(seed: int, n_seeds: int = 3) -> RobustnessData:
    rng = np.random.default_rng(seed)
    decay = rng.uniform(5, 15, size=(n_seeds, 1))
    accuracy = 0.9 * np.exp(-decay * EPS)  # (S, E)
    loss = 0.3 + decay * EPS  # (S, E)
    return RobustnessData(EPS, accuracy, loss)


def _curves() -> dict[str, dict[str, RobustnessData]]:
    return {
        f"task{t}": {method: _method_data(10 * t + m) for m, method in enumerate(["SimCLR", "SupCon", "SupCE"])}
        for t in range(4)
    }


def test_figure_writes_a_png_with_two_rows_per_task(tmp_path):
    curves = _curves()
    path = tmp_path / "figures" / "robustness.png"
    figure = plot_robustness_curves(curves, path, title="FGSM")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert len(figure.axes) == 2 * len(curves)


def test_plotted_lines_are_the_mean_over_seeds_against_eps_times_255():
    curves = _curves()
    figure = plot_robustness_curves(curves)
    axes = np.array(figure.axes).reshape(2, len(curves))
    data = curves["task2"]["SupCon"]
    accuracy_line = axes[0, 2].lines[1]  # methods are drawn in their given order
    loss_line = axes[1, 2].lines[1]
    np.testing.assert_allclose(accuracy_line.get_xdata(), np.arange(16))
    np.testing.assert_allclose(accuracy_line.get_ydata(), data.accuracy.mean(axis=0))
    np.testing.assert_allclose(loss_line.get_ydata(), data.loss.mean(axis=0))
    assert accuracy_line.get_color() == axes[0, 0].lines[1].get_color()  # a method keeps its colour
    assert len(axes[0, 2].collections) == 3  # one ±std band per method


def test_single_seed_and_missing_method():
    curves = {
        "a": {"SimCLR": RobustnessData(EPS, np.linspace(1, 0, 16), np.linspace(0, 2, 16))},  # (E,) = one seed
        "b": {"SimCLR": _method_data(1, n_seeds=1), "SupCE": _method_data(2)},
    }
    figure = plot_robustness_curves(curves)
    assert len(figure.axes[0].collections) == 0  # no band for a single seed
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["SimCLR", "SupCE"]


def test_stack_curves_makes_seed_by_eps_arrays():
    curves = [RobustnessCurve(EPS, np.full(16, 0.1 * s), np.full(16, float(s))) for s in range(4)]
    stacked = stack_curves(curves)
    assert stacked.accuracy.shape == stacked.loss.shape == (4, 16)
    np.testing.assert_allclose(stacked.loss[:, 0], [0, 1, 2, 3])
    with pytest.raises(ValueError, match="same eps"):
        stack_curves([curves[0], RobustnessCurve(EPS * 2, curves[1].accuracy, curves[1].loss)])
    with pytest.raises(ValueError, match="at least one"):
        stack_curves([])


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="at least one"):
        plot_robustness_curves({})
    with pytest.raises(ValueError, match="at least one"):
        plot_robustness_curves({"a": {}})
    bad = RobustnessData(EPS, np.zeros((2, 15)), np.zeros((2, 15)))
    with pytest.raises(ValueError, match="a/SimCLR"):
        plot_robustness_curves({"a": {"SimCLR": bad}})
