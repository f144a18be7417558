"""make_task: class subset, relabelling, class-ordered sample order, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from contrastlab.data import ImageSet, make_task
from contrastlab.errors import DatasetError


def toy(labels: list[int], n_classes: int = 6) -> ImageSet:
    """One image per label; pixel value = sample index, so the order can be read back."""
    images = np.zeros((len(labels), 2, 2, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels))
    return ImageSet(images, np.array(labels), [f"c{i}" for i in range(n_classes)], (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "toy")


def test_relabels_to_list_position_in_class_order():
    data = toy([3, 1, 4, 1, 5, 0, 3, 4, 1])
    task = make_task(data, [4, 1, 3])
    assert task.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert task.images[:, 0, 0, 0].tolist() == [2, 7, 1, 3, 8, 0, 6]  # stable within class
    assert task.classes == ["c4", "c1", "c3"] and task.num_classes == 3
    assert task.mean == data.mean and task.std == data.std
    assert task.labels.dtype == np.int64 and task.name == "toy[4,1,3]"


def test_task_is_a_copy():
    data = toy([0, 1, 0, 1])
    task = make_task(data, [1, 0])
    task.images[:] = 99
    assert data.images.max() < 99


def test_absent_class_is_an_error_naming_it():
    data = toy([0, 1, 2, 0, 1])
    with pytest.raises(DatasetError, match=r"task class 5 \('c5'\) has no samples in toy"):
        make_task(data, [0, 5])
    with pytest.raises(DatasetError, match="task class 7 is not a class of toy"):
        make_task(data, [7, 0])
    with pytest.raises(DatasetError, match="task class -1"):
        make_task(data, [-1])


def test_repeated_or_empty_class_list_is_an_error():
    data = toy([0, 1, 2])
    with pytest.raises(DatasetError, match="repeat class 1"):
        make_task(data, [1, 2, 1])
    with pytest.raises(DatasetError, match="at least one class"):
        make_task(data, [])


def test_accepts_numpy_integers():
    data = toy([0, 1, 2, 1])
    task = make_task(data, np.array([2, 1]))
    assert task.labels.tolist() == [0, 1, 1]
