"""Figures written by worker processes: the same PNG bytes as written here, and one clear error
naming the figure when a worker cannot write it."""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from contrastlab.report.figure_writer import FigureError, FigureWriter


def line_plot() -> Figure:
    figure = Figure(figsize=(3, 2), layout="constrained")  # a layout engine: saved without "tight"
    axis = figure.subplots()
    axis.plot(np.arange(5), np.arange(5) ** 2, marker="o", label="square")
    axis.legend()
    return figure


def surface_3d() -> Figure:
    figure = Figure(figsize=(3, 3))  # no layout engine: saved with bbox "tight"
    axis = figure.add_subplot(projection="3d")
    x, y = np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9))
    axis.plot_surface(x, y, x**2 + y**2, cmap="viridis")
    return figure


def unpicklable_plot() -> Figure:
    figure = line_plot()
    figure.axes[0].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0f}s"))  # a lambda does not pickle
    return figure


def broken_plot() -> Figure:
    figure = line_plot()
    figure.text(0.5, 0.5, r"$\frac{1$")  # unbalanced mathtext: pickles, fails only when drawn
    return figure


FIGURES = {"line": line_plot, "surface": surface_3d, "unpicklable": unpicklable_plot}  # the last one is written here


@pytest.fixture(scope="module")
def by_workers(tmp_path_factory):
    """One pool of 2 workers (starting one is most of these tests' time): the figures, then a broken one.
    Returns (folder, the error leaving the writer raised)."""
    folder = tmp_path_factory.mktemp("workers")
    with pytest.raises(FigureError) as error:
        with FigureWriter(2) as writer:
            for name, make in {**FIGURES, "broken": broken_plot}.items():
                figure = make()
                writer.submit(figure, folder / f"{name}.png")
                figure.clear()  # as ReportContext.save_figure does: the writer must have its own copy
    return folder, error.value


def test_workers_write_the_same_png_bytes_as_this_process(by_workers, tmp_path):
    folder, _ = by_workers
    with FigureWriter(1) as writer:
        for name, make in FIGURES.items():
            writer.submit(make(), tmp_path / f"{name}.png")
    for name in FIGURES:
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG") and (folder / f"{name}.png").read_bytes() == data, name
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*"))  # written atomically: no temporary left


def test_a_figure_a_worker_cannot_write_is_one_error_naming_it(by_workers, tmp_path):
    folder, error = by_workers
    assert re.match(r"figure broken\.png could not be written: ValueError", str(error)), error
    assert not (folder / "broken.png").exists()
    with pytest.raises(FigureError, match=r"figure broken\.png"):  # the same error when written here
        FigureWriter(1).submit(broken_plot(), tmp_path / "broken.png")


def test_renderers_fork_from_a_running_server_and_are_spawned_otherwise(monkeypatch):
    from contrastlab.utils import workers

    monkeypatch.setattr(workers, "_server_used", False)  # a report on its own: no server to wait for
    assert workers.light_worker_context().get_start_method() == "spawn"
    monkeypatch.setattr(workers, "_server_used", True)  # in a study: the launcher's server runs
    expected = "forkserver" if workers.has_fork_server() else "spawn"
    assert workers.light_worker_context().get_start_method() == expected
