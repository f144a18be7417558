"""The hand-written batched augmentation against kornia (an independent implementation of the
same torchvision formulas), plus ranges, shapes, determinism and parameter distributions."""

from __future__ import annotations

import math

import kornia
import pytest
import torch
import torch.nn.functional as F

from contrastlab import augment
from contrastlab.augment import (
    BRIGHTNESS,
    CONTRAST,
    HUE,
    SATURATION,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    augment_batch,
    colour_jitter,
    crop_resize_flip,
    grayscale,
    make_views,
    random_grayscale,
    sample_crop_boxes,
    sample_jitter,
)

pytestmark = pytest.mark.usefixtures("one_thread")


KORNIA_STEPS = {
    BRIGHTNESS: kornia.enhance.adjust_brightness_accumulative,  # torchvision's brightness: multiply
    CONTRAST: kornia.enhance.adjust_contrast_with_mean_subtraction,
    SATURATION: kornia.enhance.adjust_saturation_with_gray_subtraction,
    HUE: lambda image, turns: kornia.enhance.adjust_hue(image, turns * 2 * math.pi),  # kornia takes radians
}


def quantized_images(batch: int, channels: int = 3, height: int = 12, width: int = 12, seed: int = 0) -> torch.Tensor:
    """uint8-valued float images with ties between channels, pure grays, 0s and 1s."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, channels, height, width), generator=generator).float() / 255
    if channels == 3:
        images[:, 1, :2] = images[:, 0, :2]  # red == green
        images[:, :, 2:4] = images[:, :1, 2:4]  # gray pixels (zero chroma)
        images[:, :, 4, :3] = 1.0
        images[:, :, 5, :3] = 0.0
    return images


def kornia_crop_resize_flip(images, boxes, flip, size):
    """Per sample: slice the box, kornia bilinear resize (align_corners=False, no antialias), kornia hflip."""
    out = []
    for image, (top, left, h, w), mirrored in zip(images, boxes.tolist(), flip.tolist()):
        crop = image[None, :, top : top + h, left : left + w]
        resized = kornia.geometry.transform.resize(crop, size, interpolation="bilinear", align_corners=False, antialias=False)
        out.append(kornia.geometry.transform.hflip(resized) if mirrored else resized)
    return torch.cat(out)


def kornia_colour(images, apply, factors, order, to_gray):
    """Per sample: the four kornia colour steps in that sample's order, then kornia grayscale."""
    out = []
    for b, image in enumerate(images):
        x = image[None]
        if apply[b]:
            for step in order[b].tolist():
                if images.shape[1] == 1 and step in (SATURATION, HUE):
                    continue
                x = KORNIA_STEPS[step](x, factors[b, step : step + 1])
        if to_gray[b] and images.shape[1] == 3:
            x = kornia.color.rgb_to_grayscale(x).expand(-1, 3, -1, -1)
        out.append(x)
    return torch.cat(out)


# --- crop, resize, flip -------------------------------------------------------------------


@pytest.mark.parametrize("height, width, size", [(12, 12, 12), (12, 12, 7), (10, 14, 16), (16, 16, 32)])
def test_crop_resize_flip_matches_kornia(height, width, size):
    images = quantized_images(24, 3, height, width, seed=1)
    generator = torch.Generator().manual_seed(2)
    boxes = sample_crop_boxes(24, height, width, generator, scale=(0.05, 1.0))
    flip = torch.arange(24) % 2 == 0
    expected = kornia_crop_resize_flip(images, boxes, flip, (size, size))
    torch.testing.assert_close(crop_resize_flip(images, boxes, flip, size), expected, rtol=0, atol=2e-6)


def test_crop_of_the_whole_image_is_the_identity_and_flip_mirrors():
    images = quantized_images(3, seed=3)
    whole = torch.tensor([[0, 0, 12, 12]] * 3)
    same = crop_resize_flip(images, whole, torch.zeros(3, dtype=torch.bool), 12)
    torch.testing.assert_close(same, images, rtol=0, atol=1e-6)
    mirrored = crop_resize_flip(images, whole, torch.ones(3, dtype=torch.bool), 12)
    torch.testing.assert_close(mirrored, images.flip(-1), rtol=0, atol=1e-6)


def test_crop_boxes_fit_and_follow_the_bounds():
    generator = torch.Generator().manual_seed(4)
    height, width = 32, 24
    boxes = sample_crop_boxes(4000, height, width, generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    assert (h > 0).all() and (w > 0).all()
    # Sides are rounded to whole pixels: allow half a pixel on each side in area and ratio.
    area = h * w / (height * width)
    assert (area >= (math.sqrt(0.2 * height * width) - 0.5) ** 2 / (height * width) - 1e-9).all()
    assert ((w + 0.5) / (h - 0.5) >= 3 / 4).all() and ((w - 0.5) / (h + 0.5) <= 4 / 3).all()
    # Distinct per sample, and the offsets cover the free range.
    assert len({tuple(b) for b in boxes.tolist()}) > 1000
    assert top.min() == 0 and (top + h).max() == height


def test_tiny_scale_outside_the_image_falls_back_to_a_centre_crop():
    # No try can fit in a 4×40 image with ratio ~1 and area > 16, so every sample takes the fallback.
    boxes = sample_crop_boxes(5, 4, 40, torch.Generator().manual_seed(0), scale=(0.9, 1.0), ratio=(1.0, 1.0))
    assert boxes.tolist() == [[0, 18, 4, 4]] * 5


def test_supervised_recipe_crops_recover_boxes_and_flips():
    """Feed coordinate ramps: the output's extreme values give back each crop box and its flip."""
    batch, side = 400, 16
    columns = torch.arange(side, dtype=torch.float32) / (side - 1)
    ramps = torch.stack([columns.expand(side, side), columns[:, None].expand(side, side), torch.zeros(side, side)])
    images = ramps.expand(batch, 3, side, side)
    out = augment_batch(images, "supervised", torch.Generator().manual_seed(5))
    left = torch.round(out[:, 0].amin(dim=(1, 2)) * (side - 1))
    right = torch.round(out[:, 0].amax(dim=(1, 2)) * (side - 1))
    top = torch.round(out[:, 1].amin(dim=(1, 2)) * (side - 1))
    bottom = torch.round(out[:, 1].amax(dim=(1, 2)) * (side - 1))
    w, h = right - left + 1, bottom - top + 1
    area = w * h / side**2
    assert (area <= 1).all() and (area >= (math.sqrt(0.2) * side - 0.5) ** 2 / side**2).all()
    assert area.min() < 0.35 and area.max() == 1  # the whole scale range is used
    flipped = out[:, 0, :, 0] > out[:, 0, :, -1]  # column ramp runs right to left
    assert abs(flipped.float().mean().item() - 0.5) < 0.1
    # The draws behind this output, replayed, give exactly these boxes.
    generator = torch.Generator().manual_seed(5)
    boxes = sample_crop_boxes(batch, side, side, generator)
    assert torch.equal(boxes, torch.stack([top, left, h, w], dim=1).long())


# --- colour ------------------------------------------------------------------------------


def test_colour_steps_match_kornia():
    images = quantized_images(16, seed=6)
    generator = torch.Generator().manual_seed(7)
    factors = torch.rand(16, 3, generator=generator) * 1.6 + 0.2
    shifts = torch.rand(16, generator=generator) - 0.5
    torch.testing.assert_close(adjust_brightness(images, factors[:, 0]), KORNIA_STEPS[BRIGHTNESS](images, factors[:, 0]))
    torch.testing.assert_close(adjust_contrast(images, factors[:, 1]), KORNIA_STEPS[CONTRAST](images, factors[:, 1]))
    torch.testing.assert_close(adjust_saturation(images, factors[:, 2]), KORNIA_STEPS[SATURATION](images, factors[:, 2]))
    torch.testing.assert_close(adjust_hue(images, shifts), KORNIA_STEPS[HUE](images, shifts), rtol=0, atol=1e-5)
    torch.testing.assert_close(grayscale(images), kornia.color.rgb_to_grayscale(images))


def test_hue_closed_forms():
    red, green, blue = torch.eye(3).view(3, 3, 1, 1)
    pure = torch.stack([red, green, blue])  # (3, 3, 1, 1)
    # A third of a turn maps red -> green -> blue -> red; a whole turn is the identity.
    torch.testing.assert_close(adjust_hue(pure, torch.full((3,), 1 / 3)), torch.stack([green, blue, red]))
    images = quantized_images(4, seed=8)
    torch.testing.assert_close(adjust_hue(images, torch.zeros(4)), images, rtol=0, atol=1e-6)
    torch.testing.assert_close(adjust_hue(images, torch.full((4,), 0.5)), adjust_hue(images, torch.full((4,), -0.5)), rtol=0, atol=1e-5)


def test_colour_jitter_follows_each_samples_order_and_skips_the_others():
    images = quantized_images(32, seed=9)
    apply, factors, order = sample_jitter(32, torch.Generator().manual_seed(10), jitter_p=0.7)
    out = colour_jitter(images, apply, factors, order)
    expected = kornia_colour(images, apply, factors, order, torch.zeros(32, dtype=torch.bool))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert torch.equal(out[~apply], images[~apply])
    assert len({tuple(o) for o in order.tolist()}) > 5  # orders really are per sample


def test_jitter_factors_follow_torchvision_ranges():
    apply, factors, order = sample_jitter(5000, torch.Generator().manual_seed(11), jitter=(0.4, 0.3, 1.5, 0.1), jitter_p=0.8)
    low, high = factors.amin(dim=0), factors.amax(dim=0)
    torch.testing.assert_close(low, torch.tensor([0.6, 0.7, 0.0, -0.1]), rtol=0, atol=2e-3)
    torch.testing.assert_close(high, torch.tensor([1.4, 1.3, 2.5, 0.1]), rtol=0, atol=2e-3)
    assert abs(apply.float().mean().item() - 0.8) < 0.03
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(5000, 4))


def test_random_grayscale():
    images = quantized_images(6, seed=12)
    apply = torch.tensor([True, False, True, False, False, True])
    out = random_grayscale(images, apply)
    torch.testing.assert_close(out[apply], kornia.color.rgb_to_grayscale(images[apply]).expand(-1, 3, -1, -1))
    assert torch.equal(out[~apply], images[~apply])


# --- the whole recipe --------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 1])
def test_contrastive_recipe_equals_its_steps_in_kornia(channels):
    """Replaying the generator: crop/flip, jitter and grayscale draws, each step done by kornia."""
    batch, side, size = 24, 12, 10
    images = (quantized_images(batch, channels, side, side, seed=13) * 255).round().to(torch.uint8)
    out = augment_batch(images, "contrastive", torch.Generator().manual_seed(14), size=size, jitter_p=0.6, gray_p=0.4)

    generator = torch.Generator().manual_seed(14)
    boxes = sample_crop_boxes(batch, side, side, generator)
    flip = torch.rand(batch, generator=generator) < 0.5
    apply, factors, order = sample_jitter(batch, generator, jitter_p=0.6)
    to_gray = torch.rand(batch, generator=generator) < 0.4
    cropped = kornia_crop_resize_flip(images.float() / 255, boxes, flip, (size, size))
    expected = kornia_colour(cropped, apply, factors, order, to_gray)

    assert out.shape == (batch, channels, size, size) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("recipe", ["contrastive", "supervised", "none"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_range_shape_and_dtype(recipe, dtype):
    images = quantized_images(20, 3, 16, 16, seed=15)
    images = (images * 255).round().to(torch.uint8) if dtype == torch.uint8 else images
    for size in (None, 16, 8):
        out = augment_batch(images, recipe, torch.Generator().manual_seed(16), size=size)
        side = 16 if size is None else size
        assert out.shape == (20, 3, side, side) and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1


def test_none_recipe_is_the_pixels():
    images = (quantized_images(4, 3, 8, 8, seed=17) * 255).round().to(torch.uint8)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    out = augment_batch(images, "none", generator)
    assert torch.equal(out, images.float() / 255)
    assert torch.equal(generator.get_state(), state)  # draws nothing
    resized = augment_batch(images, "none", generator, size=4)
    torch.testing.assert_close(resized, F.interpolate(images.float() / 255, (4, 4), mode="bilinear", align_corners=False))


@pytest.mark.parametrize("recipe", ["contrastive", "supervised"])
def test_deterministic_under_a_seed_and_different_across_samples(recipe):
    image = quantized_images(1, 3, 16, 16, seed=18)
    images = image.expand(64, -1, -1, -1)  # one image, 64 times
    first = augment_batch(images, recipe, torch.Generator().manual_seed(19))
    again = augment_batch(images, recipe, torch.Generator().manual_seed(19))
    other_seed = augment_batch(images, recipe, torch.Generator().manual_seed(20))
    assert torch.equal(first, again)
    assert not torch.equal(first, other_seed)
    distinct = {tuple(view.flatten().tolist()) for view in first}
    assert len(distinct) > 55  # per-sample parameters: (almost) every copy looks different

    generator = torch.Generator().manual_seed(19)  # the state advances between calls
    assert not torch.equal(augment_batch(images, recipe, generator), augment_batch(images, recipe, generator))


def test_grayscale_and_jitter_probabilities():
    batch = 3000
    images = quantized_images(1, 3, 8, 8, seed=21).expand(batch, -1, -1, -1)
    gray_only = augment_batch(images, "contrastive", torch.Generator().manual_seed(22), jitter_p=0.0, gray_p=0.2)
    is_gray = (gray_only[:, 0] == gray_only[:, 1]).flatten(1).all(dim=1) & (gray_only[:, 1] == gray_only[:, 2]).flatten(1).all(dim=1)
    assert abs(is_gray.float().mean().item() - 0.2) < 0.03

    # Same seed, same crop draws: the contrastive view differs from the supervised one only where jittered.
    jitter_only = augment_batch(images, "contrastive", torch.Generator().manual_seed(23), jitter_p=0.8, gray_p=0.0)
    crop_only = augment_batch(images, "supervised", torch.Generator().manual_seed(23))
    unchanged = (jitter_only == crop_only).flatten(1).all(dim=1)
    assert abs(unchanged.float().mean().item() - 0.2) < 0.03


def test_one_channel_images():
    images = (quantized_images(16, 1, 10, 10, seed=24) * 255).round().to(torch.uint8)
    out = augment_batch(images, "contrastive", torch.Generator().manual_seed(25), size=8, gray_p=1.0)
    assert out.shape == (16, 1, 8, 8) and out.min() >= 0 and out.max() <= 1
    # Saturation, hue and grayscale are the identity on one channel.
    x = images.float() / 255
    shift = torch.full((16,), 0.3)
    assert torch.equal(adjust_hue(x, shift), x) and torch.equal(adjust_saturation(x, shift), x) and torch.equal(grayscale(x), x)
    torch.testing.assert_close(adjust_contrast(x, shift), KORNIA_STEPS[CONTRAST](x, shift))


def test_make_views():
    images = (quantized_images(5, 3, 12, 12, seed=26) * 255).round().to(torch.uint8)
    views = make_views(images, "contrastive", 3, torch.Generator().manual_seed(27), size=8)
    assert views.shape == (5, 3, 3, 8, 8)
    # View v of image b is row b·V + v of one batched call.
    flat = augment_batch(images.repeat_interleave(3, dim=0), "contrastive", torch.Generator().manual_seed(27), size=8)
    assert torch.equal(views.flatten(0, 1), flat)
    assert not torch.equal(views[:, 0], views[:, 1])
    single = make_views(images, "supervised", 1, torch.Generator().manual_seed(27))
    assert single.shape == (5, 1, 3, 12, 12)


def test_bad_arguments_are_errors():
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="recipe"):
        augment_batch(images, "simclr", torch.Generator())
    with pytest.raises(ValueError, match="channels"):
        augment_batch(torch.zeros(2, 2, 8, 8), "contrastive", torch.Generator())
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        augment_batch(torch.zeros(3, 8, 8), "contrastive", torch.Generator())
    with pytest.raises(ValueError, match="crop_scale"):
        augment_batch(images, "contrastive", torch.Generator(), crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="jitter"):
        augment_batch(images, "contrastive", torch.Generator(), jitter=(0.4, 0.4, 0.4, 0.7))
    with pytest.raises(ValueError, match="gray_p"):
        augment_batch(images, "contrastive", torch.Generator(), gray_p=1.5)
    with pytest.raises(ValueError, match="views"):
        make_views(images, "contrastive", 0, torch.Generator())
    with pytest.raises(ValueError, match="generator"):
        augment_batch(images.to("meta"), "contrastive", torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_the_cpu_computation_for_the_same_parameters():
    images = (quantized_images(64, 3, 32, 32, seed=28) * 255).round().to(torch.uint8)
    generator = torch.Generator(device="cuda").manual_seed(29)
    out = augment_batch(images.cuda(), "contrastive", generator)
    again = augment_batch(images.cuda(), "contrastive", torch.Generator(device="cuda").manual_seed(29))
    assert torch.equal(out, again) and out.min() >= 0 and out.max() <= 1

    replay = torch.Generator(device="cuda").manual_seed(29)
    boxes = sample_crop_boxes(64, 32, 32, replay)
    flip = torch.rand(64, generator=replay, device="cuda") < 0.5
    apply, factors, order = sample_jitter(64, replay)
    to_gray = torch.rand(64, generator=replay, device="cuda") < 0.2
    x = crop_resize_flip(images.float() / 255, boxes.cpu(), flip.cpu(), 32)
    x = random_grayscale(colour_jitter(x, apply.cpu(), factors.cpu(), order.cpu()), to_gray.cpu())
    torch.testing.assert_close(out.cpu(), x, rtol=0, atol=1e-5)


def test_module_lists_its_recipes():
    assert augment.RECIPES == ("contrastive", "supervised", "none")
