"""synth10 / synth100: the embedded, procedurally generated stand-in for CIFAR-10/100.

A class is a combination of three visual primitives that survive the contrastive
augmentations (random resized crop, flip, colour jitter, grayscale):

* a **shape** (6): disk, square, triangle, cross, star, crescent;
* a **pattern** filling the shape (6): solid, stripes, checker, dots, rings, waves;
* a **layout** (4): single (one large object), pair, framed (object inside an outline of
  its own shape), triple (three small objects).

Everything else is a nuisance drawn per image: the three colours (background and the
two pattern colours, with random hue and saturation and luminance levels at least ~0.2
apart, so shape and pattern stay visible in grayscale), position, scale, rotation of each
object, pattern frequency and phase, a background gradient, a low-frequency background
blotch field and pixel noise. No class is "a colour": colour jitter cannot destroy a class.

synth100 class ``c`` is layout ``c // 25``, pattern slot ``(c // 5) % 5`` and shape slot
``c % 5`` of that layout; each layout uses 5 of the 6 shapes and 5 of the 6 patterns (one of
each is left out, a different one per layout, and the order of the others is rotated).
So the paper's task lists become: ``[0..4]`` five shapes, ``[6,11,16,21,26]`` mostly
patterns, ``[56,58,62,66,68]`` shapes and patterns mixed, ``[95..99]`` five shapes.
synth10's ten classes are combinations that synth100 leaves out: they use every shape,
pattern and layout, but no synth10 class is a synth100 class.

Scenes are rendered at twice the output size and average-pooled 2x2 (antialiasing), then
noise is added and pixels are quantized to uint8. Generation is vectorized over a block of
images and seeded per (seed, dataset, split, block), so the first ``k`` images of every
class are the same whatever ``per_class`` is, the train and test splits never share an
image, and the same arguments always give the same bytes. Nothing is written to disk;
results are memoized in-process.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable

import numpy as np
import torch

from ..errors import DatasetError
from .imageset import ImageSet, channel_stats, convert_channels

NATIVE_SIZE = 32
BLOCK_PER_CLASS = 8  # images per class drawn from one seeded block

SHAPES = ("disk", "square", "triangle", "cross", "star", "crescent")
PATTERNS = ("solid", "stripes", "checker", "dots", "rings", "waves")
LAYOUTS = ("single", "pair", "framed", "triple")
OBJECTS_PER_LAYOUT = (1, 2, 1, 3)
RADIUS_RANGE = ((0.50, 0.70), (0.34, 0.42), (0.34, 0.42), (0.28, 0.34))  # in half-image units

# synth10: (shape, pattern, layout) triples that synth100 leaves out (see _synth100_triples),
# chosen so that every shape, pattern and layout appears at least once.
SYNTH10_TRIPLES = (
    (0, 0, 0), (4, 2, 0), (1, 1, 1), (5, 3, 1), (2, 5, 2),
    (3, 4, 2), (1, 4, 2), (3, 2, 3), (0, 5, 3), (4, 5, 3),
)

DEFAULT_PER_CLASS = {"synth10": {"train": 5000, "test": 1000}, "synth100": {"train": 500, "test": 100}}
STATS_PER_CLASS = {"synth10": 80, "synth100": 8}  # train images per class behind mean/std
_DATASET_KEY = {"synth10": 10, "synth100": 100}
_SPLIT_KEY = {"train": 0, "test": 1}


def _synth100_triples() -> list[tuple[int, int, int]]:
    """Class c -> (shape, pattern, layout). Layout l leaves out shape l and pattern l + 2; its
    first pattern is the one layout l - 1 leaves out, so [6, 11, 16, 21, 26] has five patterns."""
    triples = []
    for layout in range(len(LAYOUTS)):
        shapes = [(layout + 1 + k) % len(SHAPES) for k in range(5)]
        patterns = [(layout + 1 - k) % len(PATTERNS) for k in range(5)]
        for pattern in patterns:
            for shape in shapes:
                triples.append((shape, pattern, layout))
    return triples


def class_triples(name: str) -> list[tuple[int, int, int]]:
    """The (shape, pattern, layout) indices of every class of ``name``, in label order."""
    if name == "synth10":
        return list(SYNTH10_TRIPLES)
    if name == "synth100":
        return _synth100_triples()
    raise DatasetError(f"unknown synthetic dataset '{name}'; valid: synth10, synth100")


def class_names(name: str) -> list[str]:
    """Readable class names such as ``'star-stripes-pair'``."""
    return [f"{SHAPES[s]}-{PATTERNS[p]}-{LAYOUTS[l]}" for s, p, l in class_triples(name)]


# --- shapes: boolean masks of local coordinates (u, v), nominal radius 1 -----------------

def _disk(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u * u + v * v <= 1.0


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u.abs(), v.abs()) <= 0.85


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    inside = torch.ones_like(u, dtype=torch.bool)
    for k in range(3):  # three half-planes, inradius 0.6
        angle = math.pi / 2 + 2 * math.pi * k / 3
        inside &= u * math.cos(angle) + v * math.sin(angle) <= 0.6
    return inside


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    au, av = u.abs(), v.abs()
    return ((au <= 0.34) & (av <= 0.95)) | ((av <= 0.34) & (au <= 0.95))


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    radius = torch.sqrt(u * u + v * v)
    turn = (torch.atan2(v, u) * (5 / (2 * math.pi))) % 1.0  # position within one of 5 spikes
    spike = 1.0 - 2.0 * (turn - 0.5).abs()
    return radius <= 0.42 + 0.63 * spike


def _crescent(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v > 0.72**2)


SHAPE_MASKS: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    _disk, _square, _triangle, _cross, _star, _crescent,
)


# --- patterns: which of the two object colours each point takes -------------------------
# (u, v) are pattern coordinates, f cycles per unit, (a, b) phases in [0, 1); all broadcast.

def _solid(u, v, f, a, b):
    return torch.zeros_like(u, dtype=torch.bool)


def _stripes(u, v, f, a, b):
    return torch.frac(f * u + a) < 0.5


def _checker(u, v, f, a, b):
    return (torch.frac(f * u + a) < 0.5) ^ (torch.frac(f * v + b) < 0.5)


def _dots(u, v, f, a, b):
    du = torch.frac(f * 1.3 * u + a) - 0.5
    dv = torch.frac(f * 1.3 * v + b) - 0.5
    return du * du + dv * dv < 0.3**2


def _rings(u, v, f, a, b):
    return torch.frac(f * torch.sqrt(u * u + v * v) + a) < 0.5


def _waves(u, v, f, a, b):
    return torch.frac(f * u + 0.3 * torch.sin(2 * math.pi * (0.8 * f * v + b)) + a) < 0.5


PATTERN_BITS = (_solid, _stripes, _checker, _dots, _rings, _waves)


def _by_type(types: torch.Tensor, functions, u: torch.Tensor, *arrays: torch.Tensor) -> torch.Tensor:
    """Evaluate ``functions[t](u, *arrays)`` on the rows whose type is t; (n, S, S) bool.

    ``u`` is (n, S, S); ``arrays`` are (n, S, S) or broadcastable per-row parameters (n, 1, 1).
    """
    out = torch.zeros(u.shape, dtype=torch.bool)
    for kind in torch.unique(types).tolist():
        rows = torch.nonzero(types == kind, as_tuple=True)[0]
        if len(rows) == len(types):  # one type in this chunk: no gather needed
            out = functions[kind](u, *arrays)
        else:
            out[rows] = functions[kind](u[rows], *(a[rows] for a in arrays))
    return out


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3, 3) RGB of [background, colour 1, colour 2]: random hue and saturation, luminance
    levels near 0.12 / 0.5 / 0.88 (jittered, randomly assigned) so all three differ in grayscale."""
    levels = np.array([0.12, 0.5, 0.88]) + rng.uniform(-0.07, 0.07, size=(n, 3))
    order = np.argsort(rng.random((n, 3)), axis=1)
    luminance = np.take_along_axis(levels, order, axis=1)  # (n, 3)
    hue = rng.random((n, 3))
    saturation = rng.uniform(0.1, 0.6, size=(n, 3))
    # Fully saturated hue ramp, then shifted so its luma is zero: adding it keeps luminance.
    channel_phase = np.array([0.0, 2.0 / 3.0, 1.0 / 3.0])
    ramp = np.clip(np.abs(((hue[..., None] + channel_phase) % 1.0) * 6.0 - 3.0) - 1.0, 0.0, 1.0)
    ramp -= (ramp @ np.array([0.299, 0.587, 0.114]))[..., None]
    return np.clip(luminance[..., None] + saturation[..., None] * ramp, 0.0, 1.0)


def _draw_scenes(triples: np.ndarray, rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """Draw every random quantity of one block of scenes; rows of ``triples`` are (shape, pattern, layout).

    All values are float32/int64 numpy arrays with the image as first axis.
    """
    n = len(triples)
    layout = triples[:, 2]
    colours = _colours(rng, n)  # (n, 3, 3)
    grad_angle = rng.uniform(0, 2 * math.pi, n)
    grad_amp = rng.uniform(0.0, 0.12, n)
    blotches = rng.normal(0.0, 0.06, size=(n, 3, 4, 4))

    n_objects = np.array(OBJECTS_PER_LAYOUT)[layout]
    radius_lo = np.array([r[0] for r in RADIUS_RANGE])[layout]
    radius_hi = np.array([r[1] for r in RADIUS_RANGE])[layout]
    radius = rng.uniform(radius_lo, radius_hi)  # (n,), shared by the copies of one image
    jitter = np.where(layout == 0, 0.2, 0.08)[:, None] * rng.uniform(-1, 1, size=(n, 2))
    axis = rng.uniform(0, 2 * math.pi, n)
    centres = np.repeat(jitter[:, None, :], 3, axis=1)  # (n, 3 slots, 2) as (x, y)
    is_pair, is_triple = layout == 1, layout == 3
    spacing = radius + rng.uniform(0.04, 0.12, n)
    offset = np.stack([np.cos(axis), np.sin(axis)], axis=1) * spacing[:, None]
    centres[is_pair, 0] += offset[is_pair]
    centres[is_pair, 1] -= offset[is_pair]
    for slot in range(3):
        angle = axis + 2 * math.pi * slot / 3
        centres[is_triple, slot] += 0.5 * np.stack([np.cos(angle), np.sin(angle)], axis=1)[is_triple]
    scenes = {
        "shape": triples[:, 0], "pattern": triples[:, 1], "layout": layout, "n_objects": n_objects,
        "colours": colours, "gradient": np.stack([np.cos(grad_angle), np.sin(grad_angle)], 1) * grad_amp[:, None],
        "blotches": blotches, "radius": radius, "centres": centres,
        "rotation": rng.uniform(0, 2 * math.pi, size=(n, 3)),
        "frame_scale": rng.uniform(1.55, 1.75, n),
        "frequency": rng.uniform(1.2, 1.7, n),
        "phase": rng.random((n, 2)),
        "noise": rng.uniform(0.01, 0.05, n)[:, None, None, None] * rng.standard_normal((n, 3, size, size)),
    }
    return {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in scenes.items()}


def _interpolation_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) linear interpolation weights (pixel centres aligned, edges clamped)."""
    pos = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * n_in / n_out - 0.5).clamp(0, n_in - 1)
    low = pos.floor().long().clamp(max=n_in - 2)
    frac = pos - low
    weights = torch.zeros(n_out, n_in)
    weights[torch.arange(n_out), low] = 1 - frac
    weights[torch.arange(n_out), low + 1] = frac
    return weights


def _render(scenes: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Render drawn scenes to (n, size, size, 3) uint8 (supersampled 2x, then average-pooled)."""
    grid = 2 * size
    coords = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2.0 - 1.0  # x left->right, y top->down
    t = {k: torch.from_numpy(v) for k, v in scenes.items()}
    n = len(t["shape"])
    # Colour index per supersampled pixel: 0 background, 1 and 2 the two object colours.
    index = torch.zeros(n, grid, grid, dtype=torch.long)

    def row(a: torch.Tensor) -> torch.Tensor:  # per-image scalar -> (n, 1, 1)
        return a[:, None, None]

    for slot in range(3):
        rows = torch.nonzero(t["n_objects"] > slot, as_tuple=True)[0]
        if len(rows) == 0:
            continue
        everyone = len(rows) == n
        pick = (lambda a: a) if everyone else (lambda a: a[rows])
        cos_r, sin_r = torch.cos(t["rotation"][rows, slot]), torch.sin(t["rotation"][rows, slot])
        cx, cy = t["centres"][rows, slot, 0], t["centres"][rows, slot, 1]
        # Object-frame coordinates are separable: rx = cos*x + sin*y - (cos*cx + sin*cy), one add each.
        shift_x = cos_r * cx + sin_r * cy
        shift_y = -sin_r * cx + cos_r * cy
        rx = (cos_r[:, None] * coords)[:, None, :] + (sin_r[:, None] * coords - shift_x[:, None])[:, :, None]
        ry = (-sin_r[:, None] * coords)[:, None, :] + (cos_r[:, None] * coords - shift_y[:, None])[:, :, None]
        radius = row(pick(t["radius"]))
        u, v = rx / radius, ry / radius
        kinds = pick(t["shape"])
        slot_index = pick(index)

        framed = torch.nonzero(pick(t["layout"]) == 2, as_tuple=True)[0] if slot == 0 else torch.zeros(0, dtype=torch.long)
        if len(framed):
            outer = row(pick(t["frame_scale"])[framed])
            fu, fv, fk = u[framed], v[framed], kinds[framed]
            frame = _by_type(fk, SHAPE_MASKS, fu / outer, fv / outer) & ~_by_type(
                fk, SHAPE_MASKS, fu / (outer - 0.3), fv / (outer - 0.3))
            slot_index[framed] = torch.where(frame, 1, slot_index[framed])

        mask = _by_type(kinds, SHAPE_MASKS, u, v)
        unit = row(torch.clamp(pick(t["radius"]), min=0.45))  # textures never shrink below a visible period
        bits = _by_type(
            pick(t["pattern"]), PATTERN_BITS, rx / unit, ry / unit,
            row(pick(t["frequency"])), row(pick(t["phase"])[:, 0]), row(pick(t["phase"])[:, 1]),
        )
        slot_index = torch.where(mask, 1 + bits.long(), slot_index)
        if everyone:
            index = slot_index
        else:
            index[rows] = slot_index

    return _paint(index, t, coords)


def _paint(index: torch.Tensor, t: dict[str, torch.Tensor], coords: torch.Tensor) -> np.ndarray:
    """Colour index (n, 2*size, 2*size) -> (n, size, size, 3) uint8: colour lookup, then a linear
    illumination gradient and low-frequency blotches over everything, pooling and pixel noise."""
    n, grid = index.shape[0], index.shape[1]
    colours = t["colours"]  # (n, 3 colours, 3 channels)
    image = torch.gather(colours.permute(0, 2, 1), 2, index.view(n, 1, -1).expand(n, 3, -1)).view(n, 3, grid, grid)
    gx, gy = t["gradient"][:, 0], t["gradient"][:, 1]
    image += ((gx[:, None] * coords)[:, None, :] + (gy[:, None] * coords)[:, :, None])[:, None]
    up = _interpolation_matrix(4, grid)
    image += torch.einsum("ya,ncab,xb->ncyx", up, t["blotches"], up)
    image = torch.nn.functional.avg_pool2d(image, 2)  # (n, 3, size, size), antialiased edges
    image += t["noise"]
    image = (image * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return image.permute(0, 2, 3, 1).contiguous().numpy()


RENDER_CHUNK = 128  # images rendered at once: keeps the supersampled tensors in cache


@contextlib.contextmanager
def _one_thread():
    """Run torch single-threaded: on small tensors, a second intra-op thread gains little
    and, on a busy 2-core machine, costs over 10x in thread contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _render_block(triples: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw and render one image per row of ``triples`` (n, 3); returns (n, size, size, 3) uint8."""
    scenes = _draw_scenes(triples, rng, size)
    parts = []
    with _one_thread():
        for start in range(0, len(triples), RENDER_CHUNK):
            parts.append(_render({k: v[start:start + RENDER_CHUNK] for k, v in scenes.items()}, size))
    return np.concatenate(parts)


@functools.lru_cache(maxsize=8)
def _generate_cached(name: str, split: str, per_class: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    triples = np.asarray(class_triples(name), dtype=np.int64)
    n_classes = len(triples)
    n_blocks = -(-per_class // BLOCK_PER_CLASS)
    images = []
    for block in range(n_blocks):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _DATASET_KEY[name], _SPLIT_KEY[split], block]))
        # Within a block, image-index major and class minor: every prefix is class-balanced.
        images.append(_render_block(np.tile(triples, (BLOCK_PER_CLASS, 1)), rng, size))
    all_images = np.concatenate(images)[: per_class * n_classes]
    labels = np.tile(np.arange(n_classes, dtype=np.int64), per_class)
    all_images.setflags(write=False)
    labels.setflags(write=False)
    return all_images, labels


def generate(name: str, split: str, per_class: int, seed: int = 0, image_size: int = NATIVE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``per_class`` images of every class of ``name`` ("synth10" / "synth100").

    Returns images (per_class * n_classes, image_size, image_size, 3) uint8 and labels
    (per_class * n_classes,) int64, ordered by image index then class (labels 0, 1, ..., 0, 1, ...).
    Fresh writable copies; the generation itself is memoized in-process.
    """
    class_triples(name)  # validates the name
    if split not in _SPLIT_KEY:
        raise DatasetError(f"unknown split '{split}'; valid: train, test")
    if per_class < 1:
        raise DatasetError(f"per_class must be positive, got {per_class}")
    if image_size < 4:
        raise DatasetError(f"image_size must be at least 4 for synthetic data, got {image_size}")
    images, labels = _generate_cached(name, split, int(per_class), int(seed), int(image_size))
    return images.copy(), labels.copy()


@functools.lru_cache(maxsize=16)
def _train_stats(name: str, seed: int, image_size: int, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    images, _ = _generate_cached(name, "train", STATS_PER_CLASS[name], seed, image_size)
    return channel_stats(convert_channels(images, channels))


def load_synth(name: str, split: str, *, image_size: int | None = None, channels: int | None = None,
               per_class: int | None = None, seed: int = 0) -> ImageSet:
    """synth10 / synth100 as an :class:`ImageSet`; mean/std from the first train images of the seed."""
    size = NATIVE_SIZE if image_size is None else int(image_size)
    n_channels = 3 if channels is None else int(channels)
    count = DEFAULT_PER_CLASS[name][split] if per_class is None else int(per_class)
    images, labels = generate(name, split, count, seed, size)
    images = convert_channels(images, n_channels)
    mean, std = _train_stats(name, int(seed), size, n_channels)
    return ImageSet(images=images, labels=labels, classes=class_names(name), mean=mean, std=std, name=name)
