"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download).

There is no official split: within each class, in file order, the last fifth of the images
(rounded down) form the test split and the rest the train split (1,442 / 355 images).
Pixel values 0..16 are scaled to 0..255.
"""

from __future__ import annotations

import functools

import numpy as np

from .imageset import ImageSet, real_imageset

CLASSES = [str(d) for d in range(10)]
TEST_FRACTION = 5  # the last 1/5 of each class is the test split


@functools.lru_cache(maxsize=1)
def _read_all() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits as sklearn_digits  # imported on use: sklearn is slow to import

    bunch = sklearn_digits()
    images = np.rint(np.asarray(bunch.images) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    is_test = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        n_test = len(members) // TEST_FRACTION
        is_test[members[len(members) - n_test:]] = True
    splits = {"train": (images[~is_test], labels[~is_test]), "test": (images[is_test], labels[is_test])}
    for split_images, split_labels in splits.values():
        split_images.setflags(write=False)
        split_labels.setflags(write=False)
    return splits


def load_digits(split: str, *, image_size: int | None = None, channels: int | None = None,
                per_class: int | None = None) -> ImageSet:
    """One split of the digits: images (N, 8, 8, 1) uint8 at native size."""
    return real_imageset("digits", split, _read_all(), list(CLASSES), image_size=image_size, channels=channels,
                         per_class=per_class, source_key=("sklearn",))
