"""Figures of the pretraining stage (the analyses' figures live beside their analyses' names)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from .palette import method_colors


def plot_pretraining_curves(curves: Mapping[str, Mapping[int, list[dict]]]) -> Figure:
    """Loss per epoch, one panel per method (their objectives differ in scale), one line per seed.

    curves: method -> seed -> rows of metrics.csv (dicts with 'epoch' and 'loss').
    """
    methods = list(curves)
    colors = method_colors(methods)
    figure = Figure(figsize=(4 * len(methods), 3.2))
    axes = figure.subplots(1, len(methods), squeeze=False)[0]
    for ax, method in zip(axes, methods):
        for seed, rows in sorted(curves[method].items()):
            epochs = np.array([int(r["epoch"]) for r in rows])
            ax.plot(epochs, [float(r["loss"]) for r in rows], color=colors[method], alpha=0.8, label=f"seed {seed}")
        ax.set_title(method)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.legend(fontsize="small")
    figure.tight_layout()
    return figure
