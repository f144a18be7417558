"""Images per second of the augmentation: contrastlab's hand-written ``augment_batch`` (the one the
library runs) against kornia.augmentation's equivalent pipeline.

    .venv/bin/python benchmarks/augment.py                      # CPU, default thread count
    .venv/bin/python benchmarks/augment.py --threads 1 --repeats 30
    .venv/bin/python benchmarks/augment.py --device cuda --batch 1024

Each row times whole batches (uint8 in, float out, one view per image) after warm-up and
reports the median and the best batch. Implementations are interleaved batch by batch, so a
change in machine load hits all rows alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import kornia.augmentation as K
import torch
from torch import nn

from common import add_device_arguments, device_line, setup_device, synchronize
from contrastlab.augment import augment_batch


def kornia_pipeline(size: int, recipe: str) -> nn.Module:
    """kornia's RandomResizedCrop + flip (+ ColorJitter p=0.8 + RandomGrayscale p=0.2)."""
    steps: list[nn.Module] = [K.RandomResizedCrop((size, size), scale=(0.2, 1.0)), K.RandomHorizontalFlip()]
    if recipe == "contrastive":
        steps += [K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2)]
    return nn.Sequential(*steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 16])
    parser.add_argument("--recipes", nargs="+", default=["contrastive", "supervised"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    add_device_arguments(parser)
    args = parser.parse_args()

    device = setup_device(args)
    print(f"{device_line(device)}, batch {args.batch}")

    rows = []
    for size in args.sizes:
        images = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, device=device)
        for recipe in args.recipes:
            generator = torch.Generator(device=device).manual_seed(0)
            pipeline = kornia_pipeline(size, recipe)
            candidates: dict[str, Callable[[], torch.Tensor]] = {
                "contrastlab augment_batch": lambda: augment_batch(images, recipe, generator),
                "kornia.augmentation": lambda: pipeline(images.float() / 255),
            }
            seconds: dict[str, list[float]] = {name: [] for name in candidates}
            for repeat in range(args.warmup + args.repeats):
                for name, run in candidates.items():
                    synchronize(device)
                    started = time.perf_counter()
                    run()
                    synchronize(device)
                    if repeat >= args.warmup:
                        seconds[name].append(time.perf_counter() - started)
            for name, times in seconds.items():
                rows.append((name, recipe, size, args.batch / statistics.median(times), args.batch / min(times)))

    header = f"{'implementation':28s} {'recipe':12s} {'size':>5s} {'median img/s':>13s} {'best img/s':>11s}"
    print(header)
    print("-" * len(header))
    for name, recipe, size, median_rate, best_rate in rows:
        print(f"{name:28s} {recipe:12s} {size:5d} {median_rate:13,.0f} {best_rate:11,.0f}")


if __name__ == "__main__":
    main()
