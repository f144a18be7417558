"""Draw a grid of synth10 and synth100 samples (docs/synth_samples.png).

Rows: the 10 synth10 classes, then the 20 synth100 classes of the paper's four task lists;
columns: the first samples of each class (train split, seed 0), upscaled without smoothing.

    python scripts/synth_samples.py [--out docs/synth_samples.png] [--per-row 8] [--image-size 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from contrastlab.data import load_dataset  # noqa: E402

PAPER_TASKS = [[0, 1, 2, 3, 4], [6, 11, 16, 21, 26], [56, 58, 62, 66, 68], [95, 96, 97, 98, 99]]


def class_rows(name: str, classes: list[int], per_row: int, image_size: int) -> tuple[list[np.ndarray], list[str]]:
    """For each class, (per_row, H, W, 3) samples; and the row labels."""
    data = load_dataset(name, "train", per_class=per_row, image_size=image_size)
    rows = [data.images[data.labels == c][:per_row] for c in classes]
    labels = [f"{name} {c}: {data.classes[c]}" for c in classes]
    return rows, labels


def draw_grid(per_row: int, image_size: int, out: Path) -> None:
    rows10, labels10 = class_rows("synth10", list(range(10)), per_row, image_size)
    tasks = [c for task in PAPER_TASKS for c in task]
    rows100, labels100 = class_rows("synth100", tasks, per_row, image_size)
    rows, labels = rows10 + rows100, labels10 + labels100
    fig, axes = plt.subplots(len(rows), per_row, figsize=(per_row * 0.7 + 2.6, len(rows) * 0.7 + 0.4))
    for r, (samples, label) in enumerate(zip(rows, labels)):
        for c in range(per_row):
            ax = axes[r, c]
            ax.imshow(samples[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    # Separate synth10 from synth100 and the four synth100 tasks from each other.
    for boundary in (10, 15, 20, 25):
        axes[boundary, 0].set_title("", fontsize=1)
        for c in range(per_row):
            for side in ("top",):
                axes[boundary, c].spines[side].set_color("red")
                axes[boundary, c].spines[side].set_linewidth(2)
    fig.suptitle(f"synth10 (rows 1-10) and synth100 paper-task classes (rows 11-30), {image_size}x{image_size}", fontsize=9)
    fig.subplots_adjust(left=0.3, right=0.99, top=0.975, bottom=0.005, wspace=0.05, hspace=0.08)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/synth_samples.png"))
    parser.add_argument("--per-row", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    draw_grid(args.per_row, args.image_size, args.out)


if __name__ == "__main__":
    main()
