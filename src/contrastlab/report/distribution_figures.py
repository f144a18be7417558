"""Distributions over tasks: with many downstream tasks, one strip + box per method beats a table.

    plot_task_distributions(values, title, ylabel) -> Figure

Built without pyplot (a plain matplotlib ``Figure``, rendered by Agg when saved), so no global
state or display is touched and nothing needs closing. Colours are the report's per-method
colours (:func:`method_colors`), the same in every figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .palette import method_colors

# Half-width of the horizontal jitter of the strip points, in units of the spacing between methods.
_JITTER = 0.18


def plot_task_distributions(values: Mapping[str, Mapping[str, Sequence[float]]], title: str, ylabel: str) -> Figure:
    """One panel per quantity; in each, per method a box (median, quartiles, 1.5 IQR whiskers)
    over its per-task values with the values themselves drawn as jittered points on top.

    values: quantity name -> method -> one value per task (e.g. the mean over seeds of that task).
    Non-finite values are left out (and counted in the tick label "method (n)"). The jitter is
    seeded, so the same input draws the same figure.
    """
    if not values:
        raise ValueError("values is empty: nothing to draw")
    methods = list(dict.fromkeys(m for per_method in values.values() for m in per_method))
    colors = method_colors(methods)
    figure = Figure(figsize=(max(4.0, 1.2 * len(methods) + 1.5) * len(values), 3.8))
    axes = figure.subplots(1, len(values), squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, (quantity, per_method) in zip(axes, values.items()):
        names = [m for m in methods if m in per_method]
        data = [np.asarray(per_method[m], dtype=np.float64).reshape(-1) for m in names]
        data = [x[np.isfinite(x)] for x in data]
        positions = np.arange(len(names))
        drawn = [(p, x) for p, x in zip(positions, data) if x.size]
        if drawn:
            box = ax.boxplot([x for _, x in drawn], positions=[p for p, _ in drawn], widths=0.55,
                             showfliers=False, patch_artist=True, medianprops={"color": "black"})
            for patch, (p, _) in zip(box["boxes"], drawn):
                patch.set_facecolor(colors[names[p]])
                patch.set_alpha(0.25)
        for p, x in drawn:
            jitter = rng.uniform(-_JITTER, _JITTER, x.size)
            ax.scatter(p + jitter, x, s=14, color=colors[names[p]], alpha=0.8, edgecolors="none", zorder=3)
        ax.set_xticks(positions)
        ax.set_xticklabels([f"{m} ({x.size})" for m, x in zip(names, data)])
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title(quantity)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return figure
