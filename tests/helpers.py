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


# A whole study in seconds: tiny data, a tiny CNN, two methods, one seed, two 3-way tasks.
MICRO_STUDY = [
    "seeds=[0]", "methods=[simclr,supce]", "data.tasks=[[0,1,2],[3,4,5]]",
    "data.image_size=8", "data.pretrain_per_class=16", "data.downstream_train_per_class=8", "data.downstream_test_per_class=4",
    "model.encoder=tiny_cnn", "model.width=4", "pretrain.epochs=2", "pretrain.checkpoint_every=1", "finetune.epochs=3",
    "analysis.landscape.grid=3", "analysis.landscape.samples=12",
    "analysis.sharpness.samples=12", "analysis.sharpness.iters=3", "analysis.sharpness.trace_samples=3",
    "analysis.robustness.samples=12", "analysis.robustness.eps_255=[0,4]", "analysis.robustness.pgd_steps=2",
]
