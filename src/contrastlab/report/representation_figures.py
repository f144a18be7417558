"""Figures of the representation analyses: probes along pretraining, CKA heat maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .palette import method_colors

# (column of trajectory.csv, axis label, scale): accuracies in %, t_w as is
TRAJECTORY_PANELS = (("val_accuracy", "probe accuracy (%)", 100.0), ("knn_accuracy", "k-NN accuracy (%)", 100.0),
                     ("t_w", "final progress t_w", 1.0))


def plot_trajectory(bands: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]) -> Figure:
    """One panel per quantity, one line per method against the pretraining epoch, with its interval.

    bands: column -> method -> (epochs, mean, ci_low, ci_high); intervals may be NaN (one seed).
    """
    panels = [p for p in TRAJECTORY_PANELS if bands.get(p[0])]
    methods = list(dict.fromkeys(m for column, _, _ in panels for m in bands[column]))
    colors = method_colors(methods)
    figure = Figure(figsize=(4.2 * max(1, len(panels)), 3.3))
    axes = figure.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (column, label, scale) in zip(axes, panels):
        for method, (epochs, mean, low, high) in bands[column].items():
            ax.plot(epochs, mean * scale, marker="o", color=colors[method], label=method)
            if np.isfinite(low).any():
                ax.fill_between(epochs, low * scale, high * scale, color=colors[method], alpha=0.2, linewidth=0)
        ax.set_xlabel("pretraining epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


def plot_cka(matrices: Sequence[tuple[str, list[str], np.ndarray]]) -> Figure:
    """Heat maps of linear CKA, one per (title, names, matrix), values written in the cells."""
    n = len(matrices)
    side = max(3.2, 0.45 * max(len(names) for _, names, _ in matrices) + 1.6)
    figure = Figure(figsize=(side * n + 1.0, side), layout="constrained")  # constrained: long tick labels get their room
    axes = figure.subplots(1, n, squeeze=False)[0]
    for ax, (title, names, matrix) in zip(axes, matrices):
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize="x-small")
        ax.set_yticks(range(len(names)), names, fontsize="x-small")
        ax.set_title(title, fontsize="small")
        if len(names) <= 12:
            for i in range(len(names)):
                for j in range(len(names)):
                    value = matrix[i, j]
                    ax.text(j, i, "—" if not np.isfinite(value) else f"{value:.2f}", ha="center", va="center", fontsize="xx-small",
                            color="white" if np.isfinite(value) and value < 0.6 else "black")
    figure.colorbar(image, ax=list(axes), shrink=0.8, label="linear CKA")
    return figure
