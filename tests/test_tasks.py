"""make_task: class subset, relabelling, class-ordered sample order, clear errors; resolve_tasks: task specs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from contrastlab.data import ImageSet, make_task
from contrastlab.data.cifar100_superclasses import COARSE_NAMES, FINE_NAMES, SUPERCLASSES
from contrastlab.data.tasks import resolve_tasks
from contrastlab.errors import ConfigError, DatasetError


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


# --- resolve_tasks: task specs -> class lists ---------------------------------------------------

# The coarse label of each fine label as the CIFAR-100 archive stores it (an independent source).
CIFAR100_COARSE_OF_FINE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]


def test_superclass_table_is_the_cifar100_hierarchy():
    assert len(FINE_NAMES) == 100 == len(set(FINE_NAMES)) and list(FINE_NAMES) == sorted(FINE_NAMES)
    assert len(COARSE_NAMES) == 20 and list(COARSE_NAMES) == sorted(COARSE_NAMES)
    assert SUPERCLASSES["aquatic_mammals"] == (4, 30, 55, 72, 95)
    members = [c for fines in SUPERCLASSES.values() for c in fines]
    assert sorted(members) == list(range(100))
    for coarse, fines in enumerate(SUPERCLASSES.values()):
        assert len(fines) == 5 and all(CIFAR100_COARSE_OF_FINE[f] == coarse for f in fines)


def test_list_spec_is_returned_as_given_and_checked():
    spec = [[0, 1, 2, 3, 4], [6, 11, 16, 21, 26], [99, 95, 96]]
    assert resolve_tasks(spec, dataset="cifar100", num_classes=100) == spec
    assert resolve_tasks([(np.int64(3), 1)], dataset="x", num_classes=5) == [[3, 1]]
    with pytest.raises(ConfigError, match="outside 0..9"):
        resolve_tasks([[0, 10]], dataset="x", num_classes=10)
    with pytest.raises(ConfigError, match="two distinct"):
        resolve_tasks([[1, 1]], dataset="x", num_classes=10)
    with pytest.raises(ConfigError, match="repeats an earlier task"):
        resolve_tasks([[1, 2], [2, 1]], dataset="x", num_classes=10)
    with pytest.raises(ConfigError, match="integer"):
        resolve_tasks([[1, 2.5]], dataset="x", num_classes=10)


def test_random_spec_is_distinct_sorted_deterministic_and_fast():
    start = time.perf_counter()
    tasks = resolve_tasks("random:50", dataset="cifar100", num_classes=100, seed=3)
    assert time.perf_counter() - start < 1.0
    assert len(tasks) == 50 and len({frozenset(t) for t in tasks}) == 50
    assert all(t == sorted(t) and len(set(t)) == 5 and 0 <= t[0] and t[-1] < 100 for t in tasks)
    assert resolve_tasks("random:50", dataset="cifar100", num_classes=100, seed=3) == tasks
    assert resolve_tasks("random:50", dataset="cifar100", num_classes=100, seed=4) != tasks
    assert resolve_tasks(" random : 10 ", dataset="cifar100", num_classes=100, seed=3) == tasks[:10]
    three = resolve_tasks("random:4", dataset="synth10", num_classes=10, ways=3, seed=0)
    assert all(len(t) == 3 for t in three)


def test_random_spec_small_space_reaches_every_task_and_refuses_more():
    tasks = resolve_tasks("random:10", dataset="x", num_classes=5, ways=3)  # C(5,3) = 10
    assert len({frozenset(t) for t in tasks}) == 10
    assert resolve_tasks("random:6", dataset="x", num_classes=5, ways=3) == tasks[:6]
    with pytest.raises(ConfigError, match="only 10 distinct 3-way tasks"):
        resolve_tasks("random:11", dataset="x", num_classes=5, ways=3)
    with pytest.raises(ConfigError, match="ways"):
        resolve_tasks("random:2", dataset="x", num_classes=5, ways=6)


def test_superclass_spec():
    tasks = resolve_tasks("superclass:3", dataset="cifar100", num_classes=100)
    assert tasks == [[4, 30, 55, 72, 95], [1, 32, 67, 73, 91], [54, 62, 70, 82, 92]]
    assert len(resolve_tasks("superclass:20", dataset="cifar100", num_classes=100)) == 20
    small = resolve_tasks("superclass:20", dataset="cifar100", num_classes=100, ways=3, seed=1)
    assert small == resolve_tasks("superclass:20", dataset="cifar100", num_classes=100, ways=3, seed=1)
    for task, full in zip(small, SUPERCLASSES.values()):
        assert len(task) == 3 and task == sorted(task) and set(task) <= set(full)
    with pytest.raises(ConfigError, match="only to dataset cifar100"):
        resolve_tasks("superclass:2", dataset="cifar10", num_classes=10)
    with pytest.raises(ConfigError, match="only 20 superclasses"):
        resolve_tasks("superclass:21", dataset="cifar100", num_classes=100)
    with pytest.raises(ConfigError, match="between 2 and 5"):
        resolve_tasks("superclass:2", dataset="cifar100", num_classes=100, ways=6)


@pytest.mark.parametrize("spec", ["fixed:3", "random", "random:x", "random:0", "", 7, [], [1, 2]])
def test_unknown_spec_names_the_valid_forms(spec):
    with pytest.raises(ConfigError) as info:
        resolve_tasks(spec, dataset="cifar100", num_classes=100)
    message = str(info.value)
    assert "\n" not in message
    if spec not in ("random:x", "random:0"):
        assert "'random:K' or 'superclass:K'" in message
