"""Batched augmentation on the training device, with random parameters drawn per sample.

One hand-written implementation, driven by an explicit ``torch.Generator`` (on the images'
device): the same generator state gives the same views, so a resumed run continues the exact
random stream of an uninterrupted one. Everything is tensor work over the whole batch; no
per-image Python or PIL work.

Recipes (torchvision's semantics, the SimCLR/SupContrast CIFAR recipe):

- ``"contrastive"``: RandomResizedCrop(size, scale, ratio) → horizontal flip (p = 0.5) →
  ColorJitter(brightness, contrast, saturation, hue) with probability ``jitter_p`` →
  grayscale with probability ``gray_p``.
- ``"supervised"``: the same crop and flip only.
- ``"none"``: pixels as float in [0, 1], resized (bilinear) only if ``size`` differs.

Conventions:

- Crop: torchvision's box sampler (10 tries of area ~ U(scale)·H·W and log-aspect ~ U(log ratio),
  integer box sides by rounding, integer offsets uniform; otherwise a centre crop with the ratio
  clamped). The box is resized to ``size`` × ``size`` by bilinear interpolation with
  ``align_corners=False`` — exactly ``F.interpolate(image[..., box], size, mode="bilinear")`` of
  the cropped pixels, without antialiasing (the crop is never larger than the output when
  ``size`` is the image size). Crop, resize and flip are one ``grid_sample`` with per-sample
  sampling grids (on the 2-core CPU 2–3× faster than kornia's pipeline; see
  benchmarks/augment.py).
- Colour (torchvision's formulas, on floats in [0, 1], each step clamped to [0, 1]): brightness
  multiplies by b; contrast blends with the mean of the grayscale image, c·x + (1−c)·mean;
  saturation blends with the per-pixel grayscale, s·x + (1−s)·gray; hue adds h (in turns) to the
  HSV hue. Factors are uniform in [max(0, 1−b), 1+b] (same for contrast and saturation), h in
  [−hue, hue]. The four steps run in a random order drawn **per sample**, as torchvision's
  ColorJitter does per image. Grayscale is ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B,
  replicated to three channels.
- Random draws, all from ``generator`` and their number fixed by the batch size: crop tries and
  offsets, flips, then (contrastive) jitter on/off, factors, orders, grayscale on/off.
- One-channel images: colour jitter reduces to brightness and contrast (the contrast mean is the
  image mean); saturation, hue and grayscale are the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

RECIPES = ("contrastive", "supervised", "none")
LUMA = (0.299, 0.587, 0.114)
CROP_TRIES = 10  # torchvision's number of attempts before the centre-crop fallback
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # column order of the jitter factors


def _as_float_images(images: Tensor) -> Tensor:
    """uint8 (0..255) or float (0..1) images (B, C, H, W) -> float32 in [0, 1]."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images need 1 or 3 channels, got {images.shape[1]}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def _check_settings(
    crop_scale: tuple[float, float], crop_ratio: tuple[float, float], jitter: tuple[float, float, float, float], jitter_p: float, gray_p: float
) -> None:
    if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    if not 0 < crop_ratio[0] <= crop_ratio[1]:
        raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {crop_ratio}")
    if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
        raise ValueError(f"jitter must be (brightness, contrast, saturation, hue) >= 0 with hue <= 0.5, got {jitter}")
    for name, p in (("jitter_p", jitter_p), ("gray_p", gray_p)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be a probability, got {p}")


def _same_device(a: torch.device, b: torch.device) -> bool:
    index = torch.cuda.current_device() if "cuda" in (a.type, b.type) and torch.cuda.is_available() else 0
    return a.type == b.type and (a.index if a.index is not None else index) == (b.index if b.index is not None else index)


def _uniform(shape: tuple[int, ...], low: float | Tensor, high: float | Tensor, generator: torch.Generator, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    device: torch.device | str | None = None,
) -> Tensor:
    """torchvision's RandomResizedCrop boxes, one per sample: (B, 4) int64 (top, left, h, w).

    The number of random draws depends only on ``batch``, never on the outcome, so the
    generator advances the same way whatever the boxes turn out to be.
    """
    device = torch.device(device) if device is not None else generator.device
    area = height * width * _uniform((batch, CROP_TRIES), scale[0], scale[1], generator, device)
    log_aspect = _uniform((batch, CROP_TRIES), math.log(ratio[0]), math.log(ratio[1]), generator, device)
    offsets = torch.rand((batch, 2), generator=generator, device=device)
    aspect = torch.exp(log_aspect)
    tries_w = torch.round(torch.sqrt(area * aspect)).long()
    tries_h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (tries_w > 0) & (tries_w <= width) & (tries_h > 0) & (tries_h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # the first try that fits (0 if none does)
    w = tries_w.gather(1, first).squeeze(1)
    h = tries_h.gather(1, first).squeeze(1)

    # torchvision's fallback: the whole image, with the aspect ratio clamped to ``ratio``.
    image_ratio = width / height
    if image_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif image_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    none_fits = ~fits.any(dim=1)
    w = torch.where(none_fits, fallback_w, w)
    h = torch.where(none_fits, fallback_h, h)

    # Offsets uniform over the integers 0..H−h (torch.randint's range), centred in the fallback.
    top = torch.minimum((offsets[:, 0] * (height - h + 1)).long(), height - h)
    left = torch.minimum((offsets[:, 1] * (width - w + 1)).long(), width - w)
    top = torch.where(none_fits, (height - h) // 2, top)
    left = torch.where(none_fits, (width - w) // 2, left)
    return torch.stack([top, left, h, w], dim=1)


def _source_coordinates(start: Tensor, length: Tensor, size: int, reverse: Tensor | None = None) -> Tensor:
    """Pixel coordinates (B, size) that bilinear resizing of the pixels [start, start+length) to
    ``size`` outputs samples (align_corners=False), clamped to the box's first and last pixel
    centre, so sampling the whole image there equals interpolating the cropped pixels alone.
    Where ``reverse`` (B,) is set the outputs come in reverse order (a mirror image)."""
    start, length = start.to(torch.float32)[:, None], length.to(torch.float32)[:, None]
    k = torch.arange(size, device=start.device, dtype=torch.float32).expand(len(start), size)
    if reverse is not None:
        k = torch.where(reverse[:, None], size - 1 - k, k)
    source = start + (k + 0.5) * (length / size) - 0.5
    return torch.minimum(torch.maximum(source, start), start + length - 1)


def crop_resize_flip(images: Tensor, boxes: Tensor, flip: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Crop each image to its box, resize bilinearly, mirror left-right where ``flip``.

    ``images`` (B, C, H, W) float; ``boxes`` (B, 4) int (top, left, h, w); ``flip`` (B,) bool;
    returns (B, C, out_h, out_w) with ``size`` an int (square) or (out_h, out_w). One
    ``grid_sample`` over the batch with a per-sample sampling grid.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    batch, _, height, width = images.shape
    rows = _source_coordinates(boxes[:, 0], boxes[:, 2], out_h)  # (B, out_h) pixel y
    cols = _source_coordinates(boxes[:, 1], boxes[:, 3], out_w, reverse=flip)  # (B, out_w) pixel x
    # Pixel centres -> grid_sample's [-1, 1] (align_corners=False: pixel i spans [i, i+1)).
    grid_x = ((2 * cols + 1) / width - 1)[:, None, :].expand(batch, out_h, out_w)
    grid_y = ((2 * rows + 1) / height - 1)[:, :, None].expand(batch, out_h, out_w)
    grid = torch.stack([grid_x, grid_y], dim=-1).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(images: Tensor) -> Tensor:
    """Luma of RGB images (B, 3, H, W) -> (B, 1, H, W); one-channel images are returned as is."""
    if images.shape[1] == 1:
        return images
    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return LUMA[0] * red + LUMA[1] * green + LUMA[2] * blue


def _per_sample(factor: Tensor) -> Tensor:
    return factor.view(-1, 1, 1, 1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """x·b, clamped; ``factor`` (B,)."""
    return (images * _per_sample(factor)).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """c·x + (1−c)·mean(gray(x)), clamped; the mean is over the whole image; ``factor`` (B,)."""
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    factor = _per_sample(factor)
    return (factor * images + (1 - factor) * mean).clamp_(0.0, 1.0)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """s·x + (1−s)·gray(x) per pixel, clamped; identity on one channel; ``factor`` (B,)."""
    if images.shape[1] == 1:
        return images
    factor = _per_sample(factor)
    return (factor * images + (1 - factor) * grayscale(images)).clamp_(0.0, 1.0)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue by ``shift`` (B,) turns (−0.5..0.5); identity on one channel.

    RGB -> (hue sextant h6, value v = max, chroma Δ = max − min); back with
    channel_n = v − Δ·clamp(min(k, 4 − k), 0, 1), k = (n + h6 + 6·shift) mod 6, n = 5, 3, 1 for R, G, B.
    """
    if images.shape[1] == 1:
        return images
    red, green, blue = images[:, 0], images[:, 1], images[:, 2]
    value = torch.maximum(torch.maximum(red, green), blue)
    chroma = value - torch.minimum(torch.minimum(red, green), blue)
    # Where Δ = 0 all three channels are equal and every numerator below is 0: the hue is
    # arbitrary and the clamp only avoids 0/0.
    inverse_chroma = chroma.clamp_min(1e-30).reciprocal()
    # Which channel is the largest, as 0/1 floats (red wins ties, then green, as in torchvision);
    # float arithmetic here is several times faster on CPU than boolean masks and torch.where.
    red_is_max = 1.0 - torch.sign(value - red)
    green_is_max = 1.0 - torch.sign(value - green)
    sextant = torch.lerp((red - green) * inverse_chroma + 4.0, (blue - red) * inverse_chroma + 2.0, green_is_max)
    sextant = torch.lerp(sextant, (green - blue) * inverse_chroma, red_is_max)  # red's term in [−1, 1]; wrapped below
    base = sextant.add_(6.0 * shift.view(-1, 1, 1))
    channels = []
    for offset in (5.0, 3.0, 1.0):  # one (B, H, W) plane at a time: small arrays stay in cache
        k = base + offset
        k.sub_(6.0 * torch.floor(k / 6.0))  # k mod 6
        ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        channels.append(value - chroma * ramp)
    return torch.stack(channels, dim=1)


_COLOUR_STEPS = {BRIGHTNESS: adjust_brightness, CONTRAST: adjust_contrast, SATURATION: adjust_saturation, HUE: adjust_hue}


def sample_jitter(
    batch: int,
    generator: torch.Generator,
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample colour-jitter parameters.

    Returns ``apply`` (B,) bool, ``factors`` (B, 4) float (brightness, contrast, saturation
    factors and hue shift in turns) and ``order`` (B, 4) int64, a permutation of the four steps.
    """
    device = torch.device(device) if device is not None else generator.device
    brightness, contrast, saturation, hue = jitter
    apply = torch.rand(batch, generator=generator, device=device) < jitter_p
    low = torch.tensor([max(0.0, 1 - brightness), max(0.0, 1 - contrast), max(0.0, 1 - saturation), -hue], device=device)
    high = torch.tensor([1 + brightness, 1 + contrast, 1 + saturation, hue], device=device)
    factors = _uniform((batch, 4), low, high, generator, device)
    order = torch.rand((batch, 4), generator=generator, device=device).argsort(dim=1)
    return apply, factors, order


def _blend_step(images: Tensor, step: Tensor, factors: Tensor, active: Tensor) -> Tensor:
    """Each row's own brightness, contrast or saturation step (``step`` (B,), never HUE where
    ``active``) where ``active`` (B,), the exact identity elsewhere.

    The three steps are one blend f·x + (1 − f)·ref, ref = 0 (brightness: f·x + ±0 is exactly
    f·x), the mean grayscale (contrast) or the per-pixel grayscale (saturation): the same float
    operations as :func:`adjust_brightness` / :func:`adjust_contrast` / :func:`adjust_saturation`
    on that row alone, so results are bit-identical. Inactive rows get f = 1: 1·x + 0·ref = x
    exactly, and the clamp keeps x in [0, 1] as it is.
    """
    if images.shape[1] == 1:  # saturation is the identity on one channel
        active = active & (step != SATURATION)
    factor = factors.gather(1, step.clamp(max=SATURATION)[:, None]).squeeze(1)
    factor = _per_sample(torch.where(active, factor, torch.ones_like(factor)))
    gray = grayscale(images)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    kind = _per_sample(step)
    reference = torch.where(kind == BRIGHTNESS, 0.0, torch.where(kind == CONTRAST, mean, gray))
    return (factor * images + (1 - factor) * reference).clamp_(0.0, 1.0)


def colour_jitter(images: Tensor, apply: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Apply the four colour steps to the samples where ``apply``, each in its own ``order``.

    ``images`` (B, C, H, W) float in [0, 1]; ``apply`` (B,) bool; ``factors`` (B, 4); ``order``
    (B, 4) permutations of (brightness, contrast, saturation, hue). Samples not selected are
    returned bit-identical.

    No row selection (``nonzero``) and so no host sync: every pass runs on the whole batch with
    the rows a step does not concern left exactly as they are. Hue, the costly step, runs once:
    three blend passes bring each row to its state just before its hue step (positions before
    it), then hue, then three passes for the positions after it. Bit-identical to applying the
    steps to the selected rows one at a time.
    """
    hue_position = (order == HUE).int().argmax(dim=1)  # (B,)
    out = images
    for position in range(3):  # at most three steps come before hue
        out = _blend_step(out, order[:, position], factors, apply & (hue_position > position))
    out = torch.where(_per_sample(apply), adjust_hue(out, factors[:, HUE]), out)
    for position in range(1, 4):  # at most three come after it
        out = _blend_step(out, order[:, position], factors, apply & (hue_position < position))
    return torch.where(_per_sample(apply), out, images)  # unselected rows as given, even outside [0, 1]


def random_grayscale(images: Tensor, apply: Tensor) -> Tensor:
    """Replace the samples where ``apply`` (B,) by their luma, kept at C channels."""
    if images.shape[1] == 1:
        return images
    # lerp with 0/1 weights is exact and, on CPU, much faster than torch.where on a bool mask.
    return torch.lerp(images, grayscale(images).expand_as(images), _per_sample(apply.to(images.dtype)))


def augment_batch(  # 9 parameters: the keyword options are the transforms' own (torchvision's names), each named at the call
    images: Tensor,
    recipe: str,
    generator: torch.Generator,
    *,
    size: int | None = None,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    gray_p: float = 0.2,
) -> Tensor:
    """One random view of each image.

    ``images`` (B, C, H, W), uint8 or float in [0, 1], C ∈ {1, 3}; ``generator`` lives on the
    images' device and supplies every random number. Returns float32 (B, C, size, size) in
    [0, 1]; ``size=None`` keeps (H, W). See the module docstring for the recipes.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown augmentation recipe '{recipe}'; valid: {', '.join(RECIPES)}")
    if not _same_device(generator.device, images.device):
        raise ValueError(f"generator is on {generator.device} but the images are on {images.device}")
    _check_settings(crop_scale, crop_ratio, jitter, jitter_p, gray_p)
    x = _as_float_images(images)
    batch, _, height, width = x.shape
    out_size = (height, width) if size is None else (size, size)
    if recipe == "none":
        return x if out_size == (height, width) else F.interpolate(x, out_size, mode="bilinear", align_corners=False)

    boxes = sample_crop_boxes(batch, height, width, generator, crop_scale, crop_ratio, x.device)
    flip = torch.rand(batch, generator=generator, device=x.device) < 0.5
    x = crop_resize_flip(x, boxes, flip, out_size)
    if recipe == "supervised":
        return x.clamp_(0.0, 1.0)  # interpolation weights sum to one; clamp float round-off

    apply, factors, order = sample_jitter(batch, generator, jitter, jitter_p, x.device)
    to_gray = torch.rand(batch, generator=generator, device=x.device) < gray_p
    x = colour_jitter(x.clamp_(0.0, 1.0), apply, factors, order)
    return random_grayscale(x, to_gray)


def make_views(images: Tensor, recipe: str, views: int, generator: torch.Generator, **kwargs) -> Tensor:
    """``views`` independent views of each image: (B, C, H, W) -> (B, V, C, size, size) float32.

    The B·V views are augmented in one batched call (keyword arguments as for
    :func:`augment_batch`); view v of image b is row b·V + v of that call.
    """
    if views < 1:
        raise ValueError(f"views must be at least 1, got {views}")
    batch = images.shape[0]
    repeated = images.unsqueeze(1).expand(batch, views, *images.shape[1:]).reshape(batch * views, *images.shape[1:])
    out = augment_batch(repeated, recipe, generator, **kwargs)
    return out.view(batch, views, *out.shape[1:])
