"""Robustness figure: accuracy and loss against ε·255, one panel column per task.

Each method is drawn as the mean over seeds with a ±1 std band (sample std, ddof=1; no band
for a single seed). Rows: accuracy (top), mean cross-entropy (bottom). Colours are the
report's per-method colours (:func:`method_colors`), the same in every figure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from ..analysis.attacks import RobustnessCurve
from ..utils.io import atomic_path
from .palette import method_colors

log = logging.getLogger(__name__)


class RobustnessData(NamedTuple):
    """The curves of one method on one task, over seeds."""

    eps: np.ndarray  # (E,) pixel units
    accuracy: np.ndarray  # (S, E)
    loss: np.ndarray  # (S, E)


def stack_curves(curves: Sequence[RobustnessCurve]) -> RobustnessData:
    """Stack the per-seed curves of one method (all at the same ε values) into (S, E) arrays."""
    if len(curves) == 0:
        raise ValueError("stack_curves needs at least one curve")
    eps = np.asarray(curves[0].eps, dtype=np.float64)
    for curve in curves[1:]:
        if np.shape(curve.eps) != eps.shape or not np.allclose(curve.eps, eps):
            raise ValueError("every curve must share the same eps values")
    return RobustnessData(
        eps=eps,
        accuracy=np.stack([np.asarray(c.accuracy, dtype=np.float64) for c in curves]),
        loss=np.stack([np.asarray(c.loss, dtype=np.float64) for c in curves]),
    )


def _checked(data: RobustnessData, where: str) -> RobustnessData:
    """Shapes as documented; a single seed may be given as (E,) arrays."""
    eps = np.asarray(data.eps, dtype=np.float64).reshape(-1)
    accuracy = np.atleast_2d(np.asarray(data.accuracy, dtype=np.float64))
    loss = np.atleast_2d(np.asarray(data.loss, dtype=np.float64))
    if accuracy.ndim != 2 or accuracy.shape[1] != eps.size or loss.shape != accuracy.shape or accuracy.shape[0] == 0:
        raise ValueError(f"{where}: accuracy and loss must have shape (seeds, {eps.size}), got {accuracy.shape} and {loss.shape}")
    return RobustnessData(eps, accuracy, loss)


def _mean_and_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (E,) and sample std (E,) over seeds (axis 0); std 0 for a single seed."""
    std = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros(values.shape[1])
    return values.mean(axis=0), std


def plot_robustness_curves(
    curves: Mapping[str, Mapping[str, RobustnessData]],
    path: str | Path | None = None,
    *,
    title: str | None = None,
    xlabel: str = "ε · 255",
) -> Figure:
    """Figure of 2 rows (accuracy, loss) × one column per task of ``curves[task][method]``.

    x is ε·255 (grey levels for pixel-space ε). Writes a PNG to ``path`` when given and
    returns the figure (a plain ``Figure``, not registered with pyplot).
    """
    if not curves or not all(curves.values()):
        raise ValueError("plot_robustness_curves needs at least one task, each with at least one method")
    colours = method_colors(method for per_task in curves.values() for method in per_task)

    handles: dict[str, object] = {}  # one legend entry per method, whichever panel drew it first
    figure = Figure(figsize=(3.6 * len(curves), 6.0), layout="constrained")
    axes = figure.subplots(2, len(curves), sharex="col", squeeze=False)
    for column, (task, per_method) in enumerate(curves.items()):
        accuracy_axis, loss_axis = axes[0, column], axes[1, column]
        seed_counts: set[int] = set()
        for method, data in per_method.items():
            data = _checked(data, f"{task}/{method}")
            x = data.eps * 255
            n_seeds = data.accuracy.shape[0]
            seed_counts.add(n_seeds)
            for axis, values in ((accuracy_axis, data.accuracy), (loss_axis, data.loss)):
                mean, std = _mean_and_band(values)
                (line,) = axis.plot(x, mean, marker="o", markersize=3, color=colours[method])
                handles.setdefault(method, line)
                if n_seeds > 1:
                    axis.fill_between(x, mean - std, mean + std, color=colours[method], alpha=0.2, linewidth=0)
        accuracy_axis.set_title(f"{task} (seeds: {'/'.join(map(str, sorted(seed_counts)))})")
        accuracy_axis.set_ylim(-0.02, 1.02)
        loss_axis.set_xlabel(xlabel)
        for axis in (accuracy_axis, loss_axis):
            axis.grid(True, alpha=0.3)
    axes[0, 0].set_ylabel("accuracy")
    axes[1, 0].set_ylabel("cross-entropy")
    axes[0, 0].legend(list(handles.values()), list(handles), fontsize="small")
    if title:
        figure.suptitle(title)

    if path is not None:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=150)
        log.info("wrote %s", path)
    return figure
