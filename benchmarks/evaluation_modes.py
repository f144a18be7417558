"""Two ways of batching the analysis' repeated evaluations, against the way contrastlab does them.

    .venv/bin/python benchmarks/evaluation_modes.py          # → results/evaluation_modes.{json,md}

On the quick preset's model (ResNet-18, width 8, 16×16 images, BN folded, eval mode; random
weights with perturbed BN statistics), one thread, the two ways of each pair alternating:

- landscape: P grid points evaluated one after another (as ``per_point_surface`` does) against
  all P at once with ``torch.func.vmap`` over stacked weights, which batches every convolution
  into one grouped convolution;
- Hessian-vector product: reverse over reverse through a kept first-backward graph (as
  ``HessianOperator`` does) against forward over reverse (``torch.func.jvp`` of
  ``torch.func.grad``), which keeps no graph and recomputes the forward and backward passes.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp, vmap

from common import command_line, environment, fmt, markdown_table, measure, write_results
from contrastlab.models import classifier, linear_classifier, resnet18
from contrastlab.models.batchnorm import fold_batchnorm, fold_batchnorm_differentiable, folded_to_channels_last

RESULTS = Path(__file__).parent / "results"


def quick_classifier(width: int, classes: int = 5) -> torch.nn.Module:
    """The quick preset's classifier in eval mode, with BN statistics away from (0, 1)."""
    torch.manual_seed(0)
    encoder = resnet18(width=width)
    model = classifier(encoder, linear_classifier(encoder.feature_dim, classes)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return model


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def landscape_points(width: int, size: int, samples: int, points: int, repeats: int) -> dict:
    """Seconds for ``points`` forward passes of ``samples`` images: one at a time vs vmapped."""
    folded, _ = fold_batchnorm(quick_classifier(width))
    folded_to_channels_last(folded)
    images = torch.randn(samples, 3, size, size).contiguous(memory_format=torch.channels_last)
    buffers = dict(folded.named_buffers())
    stacked = {name: torch.stack([p.detach() * (1 + 0.01 * k) for k in range(points)]) for name, p in folded.named_parameters()}

    def at(k: int) -> torch.Tensor:
        return functional_call(folded, ({name: p[k] for name, p in stacked.items()}, buffers), (images,))

    def one_at_a_time() -> torch.Tensor:
        return torch.stack([at(k) for k in range(points)])

    all_at_once = vmap(lambda weights: functional_call(folded, (weights, buffers), (images,)))
    with torch.inference_mode():
        difference = relative_difference(all_at_once(stacked), one_at_a_time())
        sequential, batched = [], []
        for _ in range(repeats):  # alternating, so both see the same moments of the machine
            sequential.append(measure(one_at_a_time, repeats=1, warmup=0).seconds[0])
            batched.append(measure(lambda: all_at_once(stacked), repeats=1, warmup=0).seconds[0])
    return {"points": points, "one_at_a_time_s": statistics.median(sequential), "vmap_s": statistics.median(batched),
            "relative_difference": difference}


def hessian_vector_product(width: int, size: int, samples: int, repeats: int) -> dict:
    """Seconds per product H·v: reverse over reverse with the graph kept vs forward over reverse."""
    model = fold_batchnorm_differentiable(quick_classifier(width))
    images, labels = torch.randn(samples, 3, size, size), torch.randint(0, 5, (samples,))
    names = [name for name, _ in model.named_parameters()]
    parameters = list(model.parameters())
    buffers = dict(model.named_buffers())
    vector = {name: torch.randn_like(p) for name, p in zip(names, parameters)}
    gradient = torch.autograd.grad(F.cross_entropy(model(images), labels), parameters, create_graph=True)

    def reverse_over_reverse() -> list[torch.Tensor]:
        return list(torch.autograd.grad(gradient, parameters, grad_outputs=[vector[n] for n in names], retain_graph=True))

    def loss(weights: dict) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, (weights, buffers), (images,)), labels)

    weights = {name: p.detach() for name, p in zip(names, parameters)}

    def forward_over_reverse() -> list[torch.Tensor]:
        tangent = jvp(grad(loss), (weights,), (vector,))[1]
        return [tangent[n] for n in names]

    difference = relative_difference(torch.cat([t.reshape(-1) for t in forward_over_reverse()]),
                                     torch.cat([t.reshape(-1) for t in reverse_over_reverse()]))
    kept, recomputed = [], []
    for _ in range(repeats):
        kept.append(measure(reverse_over_reverse, repeats=1, warmup=0).seconds[0])
        recomputed.append(measure(forward_over_reverse, repeats=1, warmup=0).seconds[0])
    return {"reverse_over_reverse_s": statistics.median(kept), "forward_over_reverse_s": statistics.median(recomputed),
            "relative_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7, help="alternating repeats; medians are reported")
    parser.add_argument("--name", default="evaluation_modes")
    args = parser.parse_args()
    torch.set_num_threads(1)

    landscape = [landscape_points(args.width, args.size, 200, points, args.repeats) for points in (3, 9)]
    hvp = hessian_vector_product(args.width, args.size, 128, args.repeats)
    rows = [[f"landscape, {r['points']} points × 200 images", "one at a time", fmt(r["one_at_a_time_s"] * 1e3, 3), "vmap (grouped convolutions)",
             fmt(r["vmap_s"] * 1e3, 3), fmt(r["one_at_a_time_s"] / r["vmap_s"], 2), f"{r['relative_difference']:.1e}"] for r in landscape]
    rows.append(["Hessian-vector product, 128 images", "reverse over reverse, kept graph", fmt(hvp["reverse_over_reverse_s"] * 1e3, 3),
                 "forward over reverse (torch.func)", fmt(hvp["forward_over_reverse_s"] * 1e3, 3),
                 fmt(hvp["reverse_over_reverse_s"] / hvp["forward_over_reverse_s"], 2), f"{hvp['relative_difference']:.1e}"])
    command = command_line()
    markdown = (f"# Batching the analysis' repeated evaluations\n\nResNet-18 width {args.width}, {args.size}×{args.size}, BN folded, "
                f"1 thread, medians of {args.repeats} alternating repeats.\n\n"
                + markdown_table(["evaluation", "contrastlab's way", "ms", "alternative", "ms", "speed-up of the alternative", "max relative difference"], rows))
    write_results(RESULTS / f"{args.name}.json", {"environment": environment("cpu"), "landscape": landscape, "hessian_vector_product": hvp},
                  markdown, command=command)


if __name__ == "__main__":
    main()
