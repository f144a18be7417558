"""Downstream tasks: a subset of a dataset's classes, relabelled to their position in the list."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DatasetError
from .imageset import ImageSet


def make_task(imageset: ImageSet, classes: Sequence[int]) -> ImageSet:
    """Keep the samples of ``classes`` and relabel class ``classes[i]`` to ``i``.

    Samples come class-ordered: every sample of ``classes[0]`` (in their original order),
    then every sample of ``classes[1]``, and so on, a fixed order that the analyses rely on.
    Class names follow the list; mean/std stay those of the parent dataset's train split.
    A class that is out of range, repeated, or has no samples is a :class:`DatasetError`.
    """
    classes = [int(c) for c in classes]
    if not classes:
        raise DatasetError(f"a task on {imageset.name or 'this dataset'} needs at least one class")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise DatasetError(f"task classes {classes} repeat class {repeated[0]}")
    label = imageset.name or "the dataset"
    for c in classes:
        if not 0 <= c < imageset.num_classes:
            raise DatasetError(f"task class {c} is not a class of {label} (classes 0..{imageset.num_classes - 1})")
    counts = np.bincount(imageset.labels, minlength=imageset.num_classes)
    for c in classes:
        if counts[c] == 0:
            raise DatasetError(f"task class {c} ('{imageset.classes[c]}') has no samples in {label}")
    order = np.concatenate([np.flatnonzero(imageset.labels == c) for c in classes])
    new_labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts[classes])
    return ImageSet(
        images=imageset.images[order],
        labels=new_labels,
        classes=[imageset.classes[c] for c in classes],
        mean=imageset.mean,
        std=imageset.std,
        name=f"{imageset.name}{classes}".replace(" ", ""),
    )
