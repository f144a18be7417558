"""Pretraining throughput (training images/s) of contrastlab's loop against the usual way.

    .venv/bin/python benchmarks/pretrain_throughput.py                       # CPU, widths 8 and 16
    .venv/bin/python benchmarks/pretrain_throughput.py --device cuda --widths 32 64 --size 32 --images 20480
    .venv/bin/python benchmarks/pretrain_throughput.py --repeats 3 --compile    # pretrain(compile=True)
    .venv/bin/python benchmarks/pretrain_throughput.py --repeats 3 --ceiling    # + the network step alone

For each method (SimCLR, SupCon, SupCE) and encoder width, two rows:

- ``contrastlab``: :func:`contrastlab.train.pretrain` itself. The whole training set is one
  uint8 tensor on the device, views are augmented there in one batched call, channels_last,
  fp32 (``--precision bf16`` for bf16 autocast), eager unless ``--compile``. images/s is the median of the per-epoch figures it writes to
  ``metrics.csv``, the first epoch (warm-up) left out.
- ``usual``: the same model, loss, optimizer and batch size fed the common way: a
  ``DataLoader`` over PIL images with per-sample transforms in worker processes (the
  contrastive recipe: random resized crop, flip, colour jitter p=0.8, grayscale p=0.2;
  SupCE: crop and flip), float32 throughout. images/s over the epochs after the first. The
  transforms are PIL operations, as torchvision's are on PIL images (torchvision itself is not
  a dependency: its wheels pin one torch build each).

An image counts once however many views it has, in both rows. The ratio column is
contrastlab / usual: with ``--repeats R`` the two ways run alternately R times per row and the
table gives the median of each way and the median of the R paired ratios (on a shared,
noisy machine the pairs are what to trust, not absolute images/s across runs). On a CPU both rows share the same cores, so the gain there comes from
the data path alone; on a GPU the usual way is further limited by its CPU workers.

``--ceiling`` adds a third run to each pair: the same steps, channels_last fp32, on one batch of
views made before the clock starts (:func:`network_images_per_s`; no data path at all). Its ratio
to the usual way is the most contrastlab's loop can reach with the network step it has, however
cheap its data path.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common import synchronize
from contrastlab.augment import make_views
from contrastlab.data import ImageSet, load_dataset
from contrastlab.config import PretrainConfig
from contrastlab.models import build_encoder
from contrastlab.train.methods import get_method
from pretrain_call import method_head, method_loss, pretrain
from contrastlab.utils.io import csv_text

METHODS = ("simclr", "supcon", "supce")
TEMPERATURE = 0.2
LR = 0.1


class PILRecipe:
    """One random view of a PIL image -> normalized float tensor (C, size, size), drawn with
    Python's ``random`` per sample, as a torchvision pipeline on PIL images would."""

    def __init__(self, recipe: str, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.recipe, self.size = recipe, size
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Random area in [0.2, 1] of the image, aspect ratio log-uniform in [3/4, 4/3]."""
        for _ in range(10):
            area = width * height * random.uniform(0.2, 1.0)
            ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < w <= width and 0 < h <= height:
                left, top = random.randint(0, width - w), random.randint(0, height - h)
                return left, top, left + w, top + h
        return 0, 0, width, height

    def jitter(self, image: Image.Image) -> Image.Image:
        """Brightness, contrast, saturation (0.4 each) and hue (0.1) in a random order."""
        def hue(img: Image.Image) -> Image.Image:
            h, s, v = img.convert("HSV").split()
            shift = int(random.uniform(-0.1, 0.1) * 255)
            h = h.point(lambda value: (value + shift) % 256)
            return Image.merge("HSV", (h, s, v)).convert("RGB")

        steps = [lambda img: ImageEnhance.Brightness(img).enhance(random.uniform(0.6, 1.4)),
                 lambda img: ImageEnhance.Contrast(img).enhance(random.uniform(0.6, 1.4))]
        if image.mode == "RGB":
            steps += [lambda img: ImageEnhance.Color(img).enhance(random.uniform(0.6, 1.4)), hue]
        random.shuffle(steps)
        for step in steps:
            image = step(image)
        return image

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.resize((self.size, self.size), Image.BILINEAR, box=self.crop_box(*image.size))
        if random.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if self.recipe == "contrastive":
            if random.random() < 0.8:
                image = self.jitter(image)
            if random.random() < 0.2 and image.mode == "RGB":
                image = image.convert("L").convert("RGB")
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        pixels = pixels.unsqueeze(0) if pixels.dim() == 2 else pixels.permute(2, 0, 1)
        return (pixels - self.mean) / self.std


class ViewsDataset(Dataset):
    """PIL images with ``views`` independently transformed copies each: item -> ((V, C, H, W), label)."""

    def __init__(self, data: ImageSet, transform: PILRecipe, views: int) -> None:
        grey = data.images.shape[-1] == 1
        self.images = [Image.fromarray(image[..., 0] if grey else image, "L" if grey else "RGB") for image in data.images]
        self.labels = torch.from_numpy(data.labels)
        self.transform, self.views = transform, views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return torch.stack([self.transform(image) for _ in range(self.views)]), self.labels[index]


def model_and_optimizer(data: ImageSet, method: str, width: int, device: torch.device,
                        memory_format: torch.memory_format = torch.contiguous_format) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The method's encoder + head in train mode on ``device`` and its SGD, as both loops build them.
    The images come normalized, so the encoder's own Normalize is the identity."""
    torch.manual_seed(0)
    channels = data.images.shape[-1]
    encoder = build_encoder("resnet18", width=width, mean=(0.0,) * channels, std=(1.0,) * channels, in_channels=channels)
    head = method_head(method, encoder.feature_dim, data.num_classes)
    model = nn.Sequential(encoder, head).to(device, memory_format=memory_format).train()
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, method: str, views: torch.Tensor, labels: torch.Tensor) -> None:
    """One SGD step of ``method`` on ``views`` (B, V, C, H, W) with ``labels`` (B,)."""
    loss = method_loss(method, model(views.flatten(0, 1)), views, labels, TEMPERATURE)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def images_per_s_after_first(run_epoch: Callable[[], int], epochs: int, device: torch.device) -> float:
    """Call ``run_epoch`` (one epoch -> images it trained on) ``epochs`` times; images/s over all calls but the first."""
    timed_images, timed_seconds = 0, 0.0
    for epoch in range(epochs):
        started = time.perf_counter()
        seen = run_epoch()
        synchronize(device)
        if epoch > 0:
            timed_images += seen
            timed_seconds += time.perf_counter() - started
    return timed_images / timed_seconds


def usual_images_per_s(data: ImageSet, method: str, width: int, batch: int, epochs: int, workers: int, device: torch.device) -> float:
    """Train ``epochs`` epochs the usual way; images/s over all epochs but the first."""
    recipe = get_method(method)
    model, optimizer = model_and_optimizer(data, method, width, device)
    dataset = ViewsDataset(data, PILRecipe(recipe.augmentation, data.images.shape[1], data.mean, data.std), recipe.n_views(PretrainConfig()))
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=False,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)

    def run_epoch() -> int:
        seen = 0
        for views, labels in loader:
            views, labels = views.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            train_step(model, optimizer, method, views, labels)
            seen += len(labels)
        return seen

    return images_per_s_after_first(run_epoch, epochs, device)


def network_images_per_s(data: ImageSet, method: str, width: int, batch: int, epochs: int, device: torch.device) -> float:
    """contrastlab's network step alone: the steps of ``epochs`` epochs in channels_last fp32 (as
    :func:`pretrain` runs them) on one batch of views made before the clock starts, so no data path
    at all; images/s over all epochs but the first. This over the usual way's images/s is the most
    any data path can gain over the usual loop without a faster network step."""
    recipe = get_method(method)
    model, optimizer = model_and_optimizer(data, method, width, device, torch.channels_last)
    images = torch.from_numpy(data.images[:batch]).permute(0, 3, 1, 2).to(device)
    mean = torch.tensor(data.mean, device=device).view(1, 1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, 1, -1, 1, 1)
    views = (make_views(images, recipe.augmentation, recipe.n_views(PretrainConfig()), torch.Generator(device=device).manual_seed(0)) - mean) / std
    labels = torch.from_numpy(data.labels[:batch]).to(device)
    steps = math.ceil(len(data.labels) / batch)

    def run_epoch() -> int:
        for _ in range(steps):
            train_step(model, optimizer, method, views, labels)
        return steps * batch

    return images_per_s_after_first(run_epoch, epochs, device)


def contrastlab_images_per_s(data: ImageSet, method: str, width: int, batch: int, epochs: int, device: torch.device,
                             precision: str = "fp32", compile: bool = False) -> float:
    """Run :func:`pretrain` for ``epochs`` epochs; median images/s of its epochs after the first."""
    with tempfile.TemporaryDirectory() as out:
        pretrain(data, out, method=method, width=width, epochs=epochs, batch_size=batch, lr=LR,
                 temperature=TEMPERATURE, checkpoint_every=0, device=device, precision=precision, compile=compile)
        with open(Path(out) / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    return statistics.median(float(row["images_per_s"]) for row in rows[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--size", type=int, default=16, help="image side (synth10 is drawn at this size)")
    parser.add_argument("--images", type=int, default=2560, help="training images (synth10, balanced)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per row; the first is warm-up")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the usual way")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="contrastlab's precision")
    parser.add_argument("--compile", action="store_true", help="pretrain(compile=True)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two ways this many times per row")
    parser.add_argument("--ceiling", action="store_true",
                        help="also time the network alone (channels_last fp32, no data path) in each pair: "
                             "network / usual is the most any data path can reach")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()

    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is warm-up)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_dataset("synth10", "train", image_size=args.size, per_class=args.images // 10, seed=0)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{len(data.labels)} images {args.size}x{args.size}, batch {args.batch}, {args.epochs} epochs per row, "
          f"{args.workers} DataLoader workers for the usual way; contrastlab {args.precision}"
          f"{', compiled' if args.compile else ''}; {args.repeats} alternating repeat(s) per row")

    rows = []
    for width in args.widths:
        for method in args.methods:
            pairs = []
            for _ in range(args.repeats):
                ours = contrastlab_images_per_s(data, method, width, args.batch, args.epochs, device, args.precision, args.compile)
                usual = usual_images_per_s(data, method, width, args.batch, args.epochs, args.workers, device)
                network = network_images_per_s(data, method, width, args.batch, args.epochs, device) if args.ceiling else math.nan
                pairs.append((ours, usual, network))
            ours, usual, network = (statistics.median(p[i] for p in pairs) for i in range(3))
            ratio = statistics.median(a / b for a, b, _ in pairs)
            rows.append({"method": method, "width": width, "contrastlab_img_s": round(ours, 1),
                         "usual_img_s": round(usual, 1), "ratio": round(ratio, 2),
                         "pair_ratios": " ".join(f"{a / b:.2f}" for a, b, _ in pairs)})
            line = f"{method:7s} width {width:3d}: contrastlab {ours:8.1f} img/s   usual {usual:8.1f} img/s   ratio {ratio:5.2f}"
            if args.ceiling:
                ceiling = statistics.median(c / b for _, b, c in pairs)
                rows[-1].update(network_img_s=round(network, 1), ceiling=round(ceiling, 2),
                                pair_ceilings=" ".join(f"{c / b:.2f}" for _, b, c in pairs))
                line += f"   network alone {network:8.1f} img/s   ceiling {ceiling:5.2f}"
            print(f"{line}   (pairs: {rows[-1]['pair_ratios']})", flush=True)

    table = csv_text(rows, list(rows[0]))
    print("\n" + table)
    if args.csv is not None:
        args.csv.write_text(table)


if __name__ == "__main__":
    main()
