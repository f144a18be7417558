"""synth10 / synth100: determinism, balance, class design, sizes and statistics."""

from __future__ import annotations

import numpy as np
import pytest

from contrastlab.data import load_dataset, make_task, synth
from contrastlab.data.imageset import channel_stats
from contrastlab.errors import DatasetError

PAPER_TASKS = [[0, 1, 2, 3, 4], [6, 11, 16, 21, 26], [56, 58, 62, 66, 68], [95, 96, 97, 98, 99]]


def test_same_seed_same_bytes_other_seed_other_images():
    first = load_dataset("synth10", "train", per_class=6, seed=3)
    synth._generate_cached.cache_clear()  # really regenerate, not the memoized copy
    again = load_dataset("synth10", "train", per_class=6, seed=3)
    assert first.images.tobytes() == again.images.tobytes()
    np.testing.assert_array_equal(first.labels, again.labels)
    other = load_dataset("synth10", "train", per_class=6, seed=4)
    assert other.images.shape == first.images.shape
    assert (other.images != first.images).mean() > 0.9


def test_train_and_test_splits_never_share_an_image():
    train = load_dataset("synth10", "train", per_class=6)
    test = load_dataset("synth10", "test", per_class=6)
    train_rows = {image.tobytes() for image in train.images}
    assert not any(image.tobytes() in train_rows for image in test.images)


def test_classes_are_balanced_and_interleaved():
    data = load_dataset("synth100", "test", per_class=3)
    assert data.images.shape == (300, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64
    assert np.bincount(data.labels).tolist() == [3] * 100
    np.testing.assert_array_equal(data.labels[:100], np.arange(100))  # image index, then class
    assert data.num_classes == 100 and len(set(data.classes)) == 100


def test_per_class_prefix_property_across_blocks():
    big = load_dataset("synth10", "train", per_class=synth.BLOCK_PER_CLASS + 3)
    small = load_dataset("synth10", "train", per_class=5)
    np.testing.assert_array_equal(small.images, big.images[: len(small)])
    assert np.bincount(big.labels).tolist() == [synth.BLOCK_PER_CLASS + 3] * 10


def test_default_split_sizes_follow_cifar():
    assert synth.DEFAULT_PER_CLASS == {"synth10": {"train": 5000, "test": 1000}, "synth100": {"train": 500, "test": 100}}


def test_synth10_and_synth100_share_primitives_not_combinations():
    ten, hundred = synth.class_triples("synth10"), synth.class_triples("synth100")
    assert len(set(ten)) == 10 and len(set(hundred)) == 100
    assert not set(ten) & set(hundred)
    for factor, pool in enumerate((synth.SHAPES, synth.PATTERNS, synth.LAYOUTS)):
        assert {t[factor] for t in ten} == set(range(len(pool)))
        assert {t[factor] for t in hundred} == set(range(len(pool)))


def test_paper_tasks_have_the_documented_character():
    triples = synth.class_triples("synth100")

    def varying(task):
        return [len({triples[c][factor] for c in task}) for factor in range(3)]  # shapes, patterns, layouts

    assert varying(PAPER_TASKS[0]) == [5, 1, 1]  # five shapes
    assert varying(PAPER_TASKS[3]) == [5, 1, 1]
    assert varying(PAPER_TASKS[1])[1] == 5  # mostly patterns
    assert varying(PAPER_TASKS[2])[:2] == [3, 3]  # shapes and patterns mixed
    names = synth.class_names("synth100")
    assert names[0] == "square-stripes-single"
    data = load_dataset("synth100", "test", per_class=1)
    for task in PAPER_TASKS:
        sub = make_task(data, task)
        assert sub.labels.tolist() == [0, 1, 2, 3, 4] and sub.classes == [names[c] for c in task]


def test_image_size_and_channels():
    small = load_dataset("synth10", "train", per_class=2, image_size=16)
    assert small.images.shape == (20, 16, 16, 3)
    gray = load_dataset("synth10", "train", per_class=2, channels=1)
    assert gray.images.shape == (20, 32, 32, 1) and len(gray.mean) == len(gray.std) == 1


def test_statistics_are_the_train_splits_whatever_the_request():
    train = load_dataset("synth100", "train", per_class=2)
    test = load_dataset("synth100", "test", per_class=1)
    assert train.mean == test.mean and train.std == test.std
    reference = load_dataset("synth100", "train", per_class=synth.STATS_PER_CLASS["synth100"])
    np.testing.assert_allclose(train.mean, channel_stats(reference.images)[0], rtol=1e-9)
    assert all(0.4 < m < 0.6 for m in train.mean) and all(0.2 < s < 0.4 for s in train.std)


def test_images_hold_objects_not_noise():
    data = load_dataset("synth10", "train", per_class=8)
    gray = data.images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    # Every image spans dark and light: background and object colours differ in luminance.
    spread = gray.reshape(len(gray), -1)
    assert (np.percentile(spread, 98, axis=1) - np.percentile(spread, 2, axis=1)).min() > 50
    # The centre of the image is not the background colour in most images (objects sit there).
    corner = gray[:, :3, :3].mean(axis=(1, 2))
    centre = gray[:, 12:20, 12:20]
    assert (np.abs(centre - corner[:, None, None]) > 40).mean() > 0.3


def test_returned_arrays_are_fresh_copies():
    first = load_dataset("synth10", "test", per_class=2)
    first.images[:] = 0
    again = load_dataset("synth10", "test", per_class=2)
    assert again.images.max() > 0


def test_bad_arguments_are_dataset_errors():
    with pytest.raises(DatasetError, match="per_class"):
        load_dataset("synth10", "train", per_class=0)
    with pytest.raises(DatasetError, match="split"):
        load_dataset("synth10", "validation")
    with pytest.raises(DatasetError, match="synth10, synth100"):
        synth.class_triples("synth1000")
