"""Grid points per second of ``loss_surface`` against the straightforward loop.

The straightforward loop, for each grid point: build θ* + x·δ + y·η as a state dict, load it
into the model with ``load_state_dict``, evaluate all images at batch 64 under
``torch.no_grad``, and load θ* back. The model is a CIFAR ResNet-18 (default width 16) with a
5-way linear probe, on random 32×32 images (the timing does not depend on the values).

    .venv/bin/python benchmarks/landscape.py                    # CPU, torch's default thread count
    .venv/bin/python benchmarks/landscape.py --threads 1        # one core for both
    .venv/bin/python benchmarks/landscape.py --device cuda --images 2500 --width 64

Two landscapes are timed:

- whole network (the paper's: encoder + probe move): each round evaluates one grid row of
  ``--points`` points with every implementation, in alternating order, so a change of machine
  load hits all alike; reported as points/s over all rounds and the median per-round ratio.
  Rows: the straightforward loop; ``loss_surface`` with its defaults; with one worker
  (intra-op threads instead of one point per core); with bf16 autocast (an option that trades
  ~1e-3 relative loss error for speed on CPUs with bf16 instructions; not a default on the CPU).
- probe only (only the probe moves): ``loss_surface`` evaluates a ``--probe-grid``² grid on
  features computed once, against the straightforward loop's rate above (which runs the whole
  model per point whatever moves).

Every row is checked against the straightforward loop (largest relative |Δ loss|).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common import Stopwatch, add_device_arguments, device_line, setup_device, synchronize
from contrastlab.analysis.directions import random_directions
from contrastlab.analysis.landscape import SurfaceSettings, loss_surface
from contrastlab.models import classifier, linear_classifier, resnet18


def straightforward_point(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, directions, x: float, y: float, batch: int = 64) -> float:
    """Mean CE at θ* + xδ + yη the plain way: load a new state dict, evaluate, load θ* back."""
    names = [name for name, _ in model.named_parameters()]
    origin = {key: value.clone() for key, value in model.state_dict().items()}
    moved = dict(origin)
    for name, delta, eta in zip(names, directions[0], directions[1]):
        moved[name] = origin[name] + x * delta + y * eta
    model.load_state_dict(moved)
    total = 0.0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch):
            x_batch = images[start : start + batch].to(next(model.parameters()).device)
            y_batch = labels[start : start + batch].to(x_batch.device)
            total += F.cross_entropy(model(x_batch).double(), y_batch, reduction="sum").item()
    model.load_state_dict(origin)
    return total / images.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--points", type=int, default=4, help="grid points per round (one row of the grid)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="loss_surface batch size (default: its own choice)")
    parser.add_argument("--probe-grid", type=int, default=51, help="points per axis of the probe-only grid")
    add_device_arguments(parser)
    args = parser.parse_args()

    device = setup_device(args)
    torch.manual_seed(0)
    encoder = resnet18(width=args.width, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])
    model = classifier(encoder, linear_classifier(encoder.feature_dim, args.classes)).to(device).eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(args.images, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, args.classes, (args.images,), generator=generator).to(device)
    directions = random_directions(model, n=2, seed=0)
    n_parameters = sum(p.numel() for p in model.parameters())
    print(device_line(device))
    print(f"ResNet-18 width {args.width} + {args.classes}-way probe ({n_parameters:,} parameters), {args.images} images")

    # --------------------------------------------------------------- whole network
    implementations = {
        "straightforward (load_state_dict, batch 64)": None,
        "loss_surface (defaults)": {},
        "loss_surface (workers=1: intra-op threads)": {"workers": 1},
        "loss_surface (precision='bf16', not default)": {"precision": "bf16"},
    }
    seconds = {name: [] for name in implementations}
    losses = {name: [] for name in implementations}
    xs = np.linspace(-1.0, 1.0, args.points)
    ys = np.linspace(-1.0, 1.0, max(args.rounds, 2))
    # Warm-up (oneDNN primitive creation, tracing) outside the timed rounds.
    straightforward_point(model, images, labels, directions, 0.0, 0.0)
    loss_surface(model, images, labels, directions, xs[:1], ys[:1], settings=SurfaceSettings(batch_size=args.batch))
    for round_index in range(args.rounds):
        y = ys[round_index]
        order = list(implementations.items())
        if round_index % 2:
            order.reverse()
        for name, options in order:
            synchronize(device)
            start = time.perf_counter()
            if options is None:
                row = [straightforward_point(model, images, labels, directions, float(x), float(y)) for x in xs]
            else:
                row = list(loss_surface(model, images, labels, directions, xs, [y], settings=SurfaceSettings(batch_size=args.batch, **options)).loss[0])
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
            losses[name].extend(row)

    baseline = next(iter(implementations))
    print(f"\nwhole-network landscape: {args.rounds} rounds x {args.points} points")
    print(f"{'implementation':48s} {'points/s':>9s} {'s/point':>8s} {'ratio':>6s} {'median ratio':>13s} {'rel. |dloss|':>12s}")
    base_rate = args.points * args.rounds / sum(seconds[baseline])
    for name in implementations:
        rate = args.points * args.rounds / sum(seconds[name])
        per_round = statistics.median(b / s for b, s in zip(seconds[baseline], seconds[name]))
        reference = np.asarray(losses[baseline])
        deviation = float(np.max(np.abs(np.asarray(losses[name]) - reference) / np.abs(reference)))
        print(f"{name:48s} {rate:9.3f} {1 / rate:8.3f} {rate / base_rate:6.2f} {per_round:13.2f} {deviation:12.2e}")

    # --------------------------------------------------------------- probe only
    probe_directions = random_directions(model, n=2, seed=0, params="1")
    axis = np.linspace(-1.0, 1.0, args.probe_grid)
    with Stopwatch(device) as watch:
        probe_surface = loss_surface(model, images, labels, probe_directions, axis, axis, settings=SurfaceSettings(batch_size=args.batch))
    probe_seconds = watch.seconds
    middle = args.probe_grid // 2
    check = straightforward_point(model, images, labels, probe_directions, float(axis[middle]), float(axis[0]))
    deviation = abs(check - probe_surface.loss[0, middle]) / abs(check)
    probe_rate = args.probe_grid**2 / probe_seconds
    print(f"\nprobe-only landscape: {args.probe_grid}x{args.probe_grid} grid in {probe_seconds:.2f} s (features once, affine logits)")
    print(f"{'loss_surface':48s} {probe_rate:9.1f} points/s, {probe_rate / base_rate:.0f}x the straightforward loop's rate above (which runs the whole model per point); rel. |dloss| {deviation:.1e}")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
