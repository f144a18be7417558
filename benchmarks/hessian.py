"""Time to the top Hessian eigenvalue: contrastlab's Lanczos against PyHessian's power iteration.

One process, one thread, the same model, samples and loss for both: a CIFAR ResNet-18 of width
8 with a 5-way linear probe (the quick preset's size), 16×16 inputs, 128 samples, trained a few
SGD steps so the point is not a random one. The Hessian is the raw one of the mean CE over all
parameters in eval mode (PyHessian has no filter normalization), so both compute the same
number. The reference is contrastlab's Lanczos run to exhaustion on the float64 copy of the
model (``--reference-iters`` steps, no early stop).

Each method runs at a sweep of stopping tolerances (PyHessian: relative change between two
power-iteration steps; contrastlab: relative change of the top Ritz value between two Lanczos
steps); a row reports the wall time (including PyHessian's set-up forward/backward pass), the
number of Hessian-vector products and the relative error against the reference. The headline
is, per method, the fastest run whose error is at most ``--accuracy`` (1e-4).

    .venv/bin/pip install pyhessian==0.1 --no-deps   # benchmark only; not a runtime dependency
    .venv/bin/python benchmarks/hessian.py            # writes benchmarks/results/hessian.md

PyHessian 0.1 runs unchanged with torch 2.x on the CPU (``cuda=False``); it leaves ``.grad``
with graphs on the model's parameters, so it gets its own deep copy of the model.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from contrastlab.analysis.hessian import HessianOperator, HessianSettings
from contrastlab.analysis.sharpness import lanczos_top_eigenvalues
from contrastlab.models import classifier, linear_classifier, resnet18

TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def trained_model(samples: int, size: int, classes: int, steps: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """ResNet-18 (width 8) + probe after ``steps`` SGD steps on images whose class is a brightness offset."""
    torch.manual_seed(seed)
    encoder = resnet18(width=8)
    model = classifier(encoder, linear_classifier(encoder.feature_dim, classes))
    labels = torch.arange(samples) % classes
    images = (torch.rand(samples, 3, size, size) * 0.5 + labels.view(-1, 1, 1, 1) / (2 * classes)).clamp(0, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, images, labels


def top_eigenvalue(model, images, labels, iters: int, tol: float):
    """Lanczos on the raw Hessian of all samples in one batch."""
    with HessianOperator(model, images, labels, HessianSettings(batch_size=len(labels))) as hessian:
        return lanczos_top_eigenvalues(hessian, k=1, iters=iters, tol=tol)


def time_contrastlab(model, images, labels, tol: float, max_iters: int) -> tuple[float, float, int]:
    started = time.perf_counter()
    result = top_eigenvalue(model, images, labels, max_iters, tol)
    return time.perf_counter() - started, float(result.values[0]), result.iterations


def time_pyhessian(model, images, labels, tol: float, max_iters: int, seed: int) -> tuple[float, float, int]:
    from pyhessian import hessian as PyHessian

    module = sys.modules["pyhessian.hessian"]  # the package re-exports the class under the module's name
    count = [0]
    original = module.hessian_vector_product

    def counted(*args):
        count[0] += 1
        return original(*args)

    module.hessian_vector_product = counted
    own = copy.deepcopy(model)  # PyHessian leaves .grad (with graphs) on the parameters
    torch.manual_seed(seed)
    try:
        started = time.perf_counter()
        engine = PyHessian(own, torch.nn.CrossEntropyLoss(), data=(images, labels), cuda=False)
        eigenvalues, _ = engine.eigenvalues(maxIter=max_iters, tol=tol, top_n=1)
        seconds = time.perf_counter() - started
    finally:
        module.hessian_vector_product = original
    return seconds, float(eigenvalues[0]), count[0]


def seconds_per_product(model, images, labels, repeats: int) -> dict[str, float]:
    """Mean time of one Hessian-vector product: contrastlab kept / recomputed graph, PyHessian."""
    from pyhessian import hessian as PyHessian
    from pyhessian.utils import hessian_vector_product

    out = {}
    for name, keep in (("contrastlab, kept graph", True), ("contrastlab, recomputed graph", False)):
        with HessianOperator(model, images, labels, HessianSettings(batch_size=len(labels), keep_graph=keep)) as hessian:
            matvec, v = hessian.matvec, torch.randn(hessian.dim)
            matvec(v)  # builds the kept graph (keep=True); a warm-up otherwise
            started = time.perf_counter()
            for _ in range(repeats):
                matvec(v)
            out[name] = (time.perf_counter() - started) / repeats
    engine = PyHessian(copy.deepcopy(model), torch.nn.CrossEntropyLoss(), data=(images, labels), cuda=False)
    v = [torch.randn_like(p) for p in engine.params]
    hessian_vector_product(engine.gradsH, engine.params, v)
    started = time.perf_counter()
    for _ in range(repeats):
        hessian_vector_product(engine.gradsH, engine.params, v)
    out["PyHessian"] = (time.perf_counter() - started) / repeats
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--accuracy", type=float, default=1e-4)
    parser.add_argument("--max-iters", type=int, default=200)
    parser.add_argument("--reference-iters", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hessian.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, images, labels = trained_model(args.samples, args.size, args.classes, args.train_steps, args.seed)
    reference = top_eigenvalue(model.double(), images.double(), labels, args.reference_iters, 0.0).values[0]
    model = model.float()

    rows = []
    for tol in TOLERANCES:
        for name, run in (("contrastlab Lanczos", lambda t: time_contrastlab(model, images, labels, t, args.max_iters)),
                          ("PyHessian power iteration", lambda t: time_pyhessian(model, images, labels, t, args.max_iters, args.seed))):
            seconds, value, products = run(tol)
            rows.append((name, tol, seconds, products, abs(value - reference) / abs(reference)))
            print(f"{name:26s} tol={tol:.0e}  {seconds:7.2f} s  {products:4d} HVPs  rel. error {rows[-1][-1]:.1e}", flush=True)
    per_product = seconds_per_product(model, images, labels, repeats=10)

    best = {}
    for name, tol, seconds, products, error in rows:
        if error <= args.accuracy and (name not in best or seconds < best[name][2]):
            best[name] = (name, tol, seconds, products, error)

    command = "  ".join(["python benchmarks/hessian.py", *sys.argv[1:]]).strip()
    lines = [
        "# Top Hessian eigenvalue: contrastlab vs PyHessian",
        "",
        f"Command: `{command}` (torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s)).",
        f"Model: CIFAR ResNet-18 width 8 + 5-way probe ({sum(p.numel() for p in model.parameters()):,} parameters), "
        f"{args.size}×{args.size} inputs, {args.samples} samples, {args.train_steps} SGD steps; raw Hessian of the mean CE, all parameters, eval mode.",
        f"Reference λ_max = {reference:.8g} (contrastlab Lanczos in float64, {args.reference_iters} steps, no early stop).",
        "",
        f"## Time to relative accuracy {args.accuracy:g}",
        "",
        "| method | stopping tol | time (s) | HVPs | rel. error |",
        "|---|---|---|---|---|",
    ]
    for name in ("contrastlab Lanczos", "PyHessian power iteration"):
        if name in best:
            _, tol, seconds, products, error = best[name]
            lines.append(f"| {name} | {tol:.0e} | {seconds:.2f} | {products} | {error:.1e} |")
        else:
            lines.append(f"| {name} | — | not reached within {args.max_iters} products | — | — |")
    lines += ["", "## Every run", "", "| method | stopping tol | time (s) | HVPs | rel. error |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {tol:.0e} | {seconds:.2f} | {products} | {error:.1e} |" for name, tol, seconds, products, error in rows]
    lines += ["", "## One Hessian-vector product", "", "| implementation | s/HVP |", "|---|---|"]
    lines += [f"| {name} | {seconds:.3f} |" for name, seconds in per_product.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
