"""Small fabricated data for the training and study tests."""

import numpy as np

from contrastlab.data import ImageSet


def blob_imageset(n_per_class: int = 16, n_classes: int = 4, size: int = 8, seed: int = 0, name: str = "blobs") -> ImageSet:
    """Images whose class is the position of a bright square; (N, size, size, 3) uint8, class-sorted."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n_per_class * n_classes, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    half = size // 2
    for i, c in enumerate(labels):
        r, col = divmod(int(c) % 4, 2)
        images[i, r * half:(r + 1) * half, col * half:(col + 1) * half] += 150
    mean = tuple(float(m) for m in images.reshape(-1, 3).mean(0) / 255)
    std = tuple(float(s) for s in images.reshape(-1, 3).std(0) / 255)
    return ImageSet(images=images, labels=labels, classes=[f"c{k}" for k in range(n_classes)], mean=mean, std=std, name=name)
