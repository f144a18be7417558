"""The one in-memory dataset type, and the transformations every loader shares.

An :class:`ImageSet` is plain arrays: uint8 images (N, H, W, C), int64 labels (N,), class
names, and the per-channel mean/std (pixel units in [0, 1]) of the *training* split of the
dataset it came from, so the train and test splits of one dataset carry the same values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DatasetError

SPLITS = ("train", "test")

# ITU-R BT.601 luma weights: the grayscale that PIL and torchvision use.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class ImageSet:
    """Images (N, H, W, C) uint8, labels (N,) int64 in [0, len(classes)), class names,
    and the train split's per-channel mean/std in [0, 1] pixel units (one entry per channel)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.images, np.ndarray) or self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be a uint8 array (N, H, W, C), got {_describe(self.images)}")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D integer array, got {_describe(labels)}")
        self.labels = labels.astype(np.int64, copy=False)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.classes = [str(c) for c in self.classes]
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}), got [{self.labels.min()}, {self.labels.max()}]")
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        channels = self.images.shape[3]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean/std need {channels} entries, got {len(self.mean)}/{len(self.std)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        n, h, w, c = self.images.shape
        return f"ImageSet(name={self.name!r}, n={n}, size={h}x{w}x{c}, classes={self.num_classes})"


def _describe(array: object) -> str:
    if isinstance(array, np.ndarray):
        return f"{array.dtype} array of shape {array.shape}"
    return type(array).__name__


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data folder: ``root`` if given, else env ``CONTRASTLAB_DATA``, else ``~/.cache/contrastlab``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("CONTRASTLAB_DATA")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/contrastlab").expanduser()


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, size, size, C) uint8, bilinear with antialiasing (a no-op at the same size)."""
    if size < 1:
        raise DatasetError(f"image_size must be positive, got {size}")
    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = np.empty((len(images), size, size, images.shape[3]), dtype=np.uint8)
    chunk = 4096  # bounds the float32 copy of a 50k-image split
    for start in range(0, len(images), chunk):
        # The float copy is made by NumPy: torch.from_numpy would warn about the dataset caches'
        # read-only arrays, whose channel statistics are computed at the resized size.
        x = torch.from_numpy(images[start:start + chunk].astype(np.float32)).permute(0, 3, 1, 2)
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start:start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, H, W, channels): gray->RGB repeats, RGB->gray takes BT.601 luma."""
    have = images.shape[3]
    if channels == have:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=3)
    if have == 3 and channels == 1:
        luma = images.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    raise DatasetError(f"cannot convert {have}-channel images to {channels} channels (supported: 1 and 3)")


def transform_images(images: np.ndarray, image_size: int | None, channels: int | None) -> np.ndarray:
    """Apply the optional channel conversion and resize of :func:`load_dataset`."""
    if channels is not None:
        images = convert_channels(images, channels)
    if image_size is not None:
        images = resize_images(images, image_size)
    return images


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (N, H, W, C) uint8 images, in [0, 1] pixel units."""
    n_channels = images.shape[3]
    total = np.zeros(n_channels)
    total_sq = np.zeros(n_channels)
    count = 0
    chunk = 8192
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].reshape(-1, n_channels).astype(np.float64) / 255.0
        total += x.sum(axis=0)
        total_sq += np.square(x).sum(axis=0)
        count += len(x)
    if count == 0:
        raise DatasetError("cannot compute channel statistics of an empty image set")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices (sorted, original order) of the first ``per_class`` samples of every class."""
    if per_class < 1:
        raise DatasetError(f"per_class must be positive, got {per_class}")
    keep = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        keep[np.flatnonzero(labels == label)[:per_class]] = True
    return np.flatnonzero(keep)


# Channel statistics of the train split of real datasets, keyed by (dataset, source
# stamp, image_size, channels): test-split loads reuse them without recomputing.
_TRAIN_STATS: dict[tuple, tuple[tuple[float, ...], tuple[float, ...]]] = {}


def real_imageset(
    name: str,
    split: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: list[str],
    *,
    image_size: int | None,
    channels: int | None,
    per_class: int | None,
    source_key: tuple,
) -> ImageSet:
    """Build the :class:`ImageSet` of one split of a real dataset.

    ``splits`` maps "train"/"test" to native (images (N, H, W, C) uint8, labels (N,)), which
    are not modified. ``per_class`` keeps the first k images of each class; mean/std come from
    the whole train split under the same resize/conversion. ``source_key`` identifies the files
    read (path and modification stamp) so that cached statistics never outlive them.
    """
    images, labels = splits[split]
    if per_class is not None:
        keep = first_per_class(labels, int(per_class))
        images, labels = images[keep], labels[keep]
    images = transform_images(images, image_size, channels)
    if images is splits[split][0]:
        images = images.copy()  # never hand out the cached array itself
    key = (name, source_key, image_size, channels)
    if key not in _TRAIN_STATS:
        _TRAIN_STATS[key] = channel_stats(transform_images(splits["train"][0], image_size, channels))
    mean, std = _TRAIN_STATS[key]
    return ImageSet(images=images, labels=np.array(labels, dtype=np.int64), classes=classes, mean=mean, std=std, name=name)
