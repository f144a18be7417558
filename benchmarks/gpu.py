"""GPU benchmark of the paper-scale study: what one NVIDIA GPU does per second, and how long the
full paper grid (3 methods × 4 seeds × 4 tasks, 200 epochs, 51×51 landscapes) takes on it.

    python benchmarks/gpu.py                          # on a CUDA machine: every row, ~5 minutes
    python benchmarks/gpu.py --peak-tflops 312        # an A100 (bf16 dense peak, TFLOP/s)
    python benchmarks/gpu.py --no-compile             # skip the torch.compile rows
    python benchmarks/gpu.py --cpu-smoke              # every row at tiny sizes on the CPU (a check, not a figure)

Rows (the paper's settings unless an option says otherwise):

- pretrain <method> eager | compiled: training images/s of CIFAR ResNet-18 (width 64, 32×32,
  batch 256 images, 2 views for SimCLR/SupCon) with bf16 autocast and channels_last, the
  library's augmentation on the GPU included; one step = views + forward + loss + backward +
  SGD step, as in ``contrastlab.train.pretrain``. "compiled" runs forward + loss through
  ``torch.compile``. MFU = model FLOPs of one step (forward + backward, counted by
  ``torch.utils.flop_counter.FlopCounterMode``; the augmentation is not counted) / step time /
  ``--peak-tflops``.
- encoder inference: images/s of the encoder alone in eval mode (what a probe's feature
  extraction costs).
- landscape: grid points/s of ``contrastlab.analysis.landscape.loss_surface`` over encoder +
  probe on 2,500 images (one 5-way task's train split).
- sharpness: seconds per Hessian-vector product (``hessian_top_eigenvalues``, 512 samples).
- FGSM / PGD: seconds per ε on 2,500 images (PGD: 10 steps).
- progress: ``contrastlab.analysis.progress.progress`` on 10,000 models (N = 2,500, C = 5).
- InPCA: ``contrastlab.analysis.inpca.inpca`` on M = 384 models (N = 2,500, C = 5).
- projected wall time of the full paper grid on this one GPU, from the rows above.

A row whose module cannot be imported, or whose run fails, is kept with the reason in its note.
Prints one table at the end and writes it, in markdown, to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

PAPER = {
    "methods": ["simclr", "supcon", "supce"], "seeds": 4, "tasks": 4, "epochs": 200, "images": 50_000,
    "grid": 51, "task_train": 2_500, "task_val": 500, "probe_epochs": 30, "sharpness_hvps": 20 + 20,
    "sharpness_samples": 512, "eps": 16, "pgd_steps": 10, "models_per_task": 4 * 4 * 31,  # 3 methods + random, 4 seeds, 31 snapshots
}


@dataclass
class Row:
    name: str
    setting: str
    value: float | None
    unit: str
    note: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Sizes:
    """Workload sizes: the paper's by default, tiny ones for --cpu-smoke."""

    width: int = 64
    image_size: int = 32
    batch: int = 256
    pool: int = 4096  # distinct images batches are drawn from
    steps: int = 30
    warmup: int = 5
    landscape_images: int = 2_500
    landscape_grid: int = 5
    sharpness_samples: int = 512
    attack_images: int = 2_500
    progress_models: int = 10_000
    inpca_models: int = 384
    samples: int = 2_500
    classes: int = 5


SMOKE = Sizes(width=4, image_size=16, batch=32, pool=128, steps=2, warmup=1, landscape_images=64, landscape_grid=2,
              sharpness_samples=32, attack_images=64, progress_models=40, inpca_models=12, samples=50, classes=5)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def random_probabilities(models: int, samples: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs (models, samples, classes) float32 and labels (samples,): a stand-in for snapshots."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((models, samples, classes), dtype=np.float32) * 2
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return probs, rng.integers(0, classes, samples)


# ---- pretraining ----------------------------------------------------------------------------

def pretrain_step(method: str, sizes: Sizes, device: torch.device, compiled: bool):
    """(step function, flop-count function) of one training step of ``method``, as the library's loop runs it."""
    from contrastlab.augment import make_views
    from contrastlab.models import build_encoder, linear_classifier, projection_head
    from contrastlab.objectives import get_objective

    objective = get_objective(method)
    views = 2 if objective.views > 1 else 1
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", width=sizes.width, in_channels=3)
    head = projection_head(encoder.feature_dim, out_dim=128) if objective.head == "projection" else linear_classifier(encoder.feature_dim, 10)
    model = nn.Sequential(encoder, head).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (sizes.pool, 3, sizes.image_size, sizes.image_size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (sizes.pool,), device=device)
    use_bf16 = device.type == "cuda"

    def forward_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            outputs = model(x).float().view(len(y), views, -1)
            return objective.loss(outputs, y, temperature=0.07)

    loss_fn = torch.compile(forward_loss) if compiled else forward_loss

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, sizes.pool, (sizes.batch,), generator=generator, device=device)
        x = make_views(images[index], objective.augmentation, views, generator, size=sizes.image_size, crop_scale=(0.2, 1.0))
        x = x.flatten(0, 1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels[index]

    def step() -> None:
        x, y = batch()
        loss = loss_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def count_flops() -> int:
        from torch.utils.flop_counter import FlopCounterMode

        x, y = batch()
        with FlopCounterMode(display=False) as counter:
            forward_loss(x, y).backward()  # eager: the counter sees every matmul and convolution
        optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    return step, count_flops


def bench_pretrain(sizes: Sizes, device: torch.device, methods: list[str], compile_modes: list[bool], peak_tflops: float) -> list[Row]:
    rows = []
    for method in methods:
        for compiled in compile_modes:
            setting = f"{'compiled' if compiled else 'eager'}, batch {sizes.batch}, width {sizes.width}, {sizes.image_size}px"
            name = f"pretrain {method}"
            try:
                step, count_flops = pretrain_step(method, sizes, device, compiled)
                flops = count_flops()
                compile_started = time.perf_counter()
                step()  # compilation (if any) happens here, outside the timing
                synchronize(device)
                first_step = time.perf_counter() - compile_started
                seconds = timed(step, device, sizes.steps, sizes.warmup)
                per_step = statistics.median(seconds)
                images_per_s = sizes.batch / per_step
                achieved = flops / per_step / 1e12
                note = f"step {per_step * 1e3:.1f} ms, {flops / 1e9:.1f} GFLOP/step, {achieved:.1f} TFLOP/s"
                if compiled:
                    note += f", first step (compile) {first_step:.0f} s"
                rows.append(Row(name, setting, images_per_s, "images/s", note,
                                {"method": method, "compiled": compiled, "mfu": achieved / peak_tflops}))
                rows.append(Row(f"MFU {method}", setting, 100 * achieved / peak_tflops, "%", f"of {peak_tflops:g} TFLOP/s peak"))
            except Exception as exc:  # noqa: BLE001 - a failed row is reported, the others still run
                rows.append(Row(name, setting, None, "images/s", f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"))
                traceback.print_exc(file=sys.stderr)
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


# ---- inference, landscape, sharpness, attacks -------------------------------------------------

def task_classifier(sizes: Sizes, device: torch.device) -> nn.Module:
    """A trained-looking ResNet-18 + 5-way probe in eval mode (weights random: timing does not depend on them)."""
    from contrastlab.models import classifier, linear_classifier, resnet18

    torch.manual_seed(0)
    encoder = resnet18(width=sizes.width)
    return classifier(encoder, linear_classifier(encoder.feature_dim, sizes.classes)).to(device).eval()


def task_data(n: int, sizes: Sizes, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, sizes.image_size, sizes.image_size, generator=generator)
    return images.to(device), torch.randint(0, sizes.classes, (n,), generator=generator).to(device)


def bench_inference(sizes: Sizes, device: torch.device) -> list[Row]:
    model = task_classifier(sizes, device)
    encoder = model[0]
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    images, _ = task_data(min(sizes.landscape_images, 2048), sizes, device)

    @torch.no_grad()
    def run() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            for chunk in images.split(512):
                encoder(chunk)

    seconds = statistics.median(timed(run, device, max(2, sizes.steps // 5), 1))
    return [Row("encoder inference", f"eval, bf16, batch 512, {len(images)} images", len(images) / seconds, "images/s")]


def bench_landscape(sizes: Sizes, device: torch.device) -> list[Row]:
    setting = f"{sizes.landscape_images} images, {sizes.landscape_grid}×{sizes.landscape_grid} grid, encoder + probe"
    try:
        from contrastlab.analysis.landscape import loss_surface, random_directions
    except ImportError as exc:
        return [Row("landscape", setting, None, "points/s", f"skipped: {exc}")]
    model = task_classifier(sizes, device)
    images, labels = task_data(sizes.landscape_images, sizes, device)
    directions = random_directions(model, n=2, seed=0)
    axis = np.linspace(-1, 1, sizes.landscape_grid)
    loss_surface(model, images[: min(len(images), 64)], labels[: min(len(images), 64)], directions, axis[:2], axis[:1])  # warm-up
    synchronize(device)
    started = time.perf_counter()
    loss_surface(model, images, labels, directions, axis, axis)
    synchronize(device)
    seconds = time.perf_counter() - started
    return [Row("landscape", setting, sizes.landscape_grid ** 2 / seconds, "points/s", f"{seconds:.1f} s for the grid")]


def bench_sharpness(sizes: Sizes, device: torch.device) -> list[Row]:
    setting = f"{sizes.sharpness_samples} samples, encoder + probe"
    try:
        from contrastlab.analysis.sharpness import hessian_top_eigenvalues
    except ImportError as exc:
        return [Row("sharpness", setting, None, "s/HVP", f"skipped: {exc}")]
    model = task_classifier(sizes, device)
    images, labels = task_data(sizes.sharpness_samples, sizes, device)
    iters = 3
    hessian_top_eigenvalues(model, images, labels, k=1, iters=1)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    hessian_top_eigenvalues(model, images, labels, k=1, iters=iters)
    synchronize(device)
    per_hvp = (time.perf_counter() - started) / iters
    return [Row("sharpness", setting, per_hvp, "s/HVP", "one power-iteration step = one Hessian-vector product")]


def bench_attacks(sizes: Sizes, device: torch.device) -> list[Row]:
    try:
        from contrastlab.analysis.attacks import robust_accuracy
    except ImportError as exc:
        return [Row("FGSM", "", None, "s/eps", f"skipped: {exc}"), Row("PGD", "", None, "s/eps", f"skipped: {exc}")]
    model = task_classifier(sizes, device)
    images, labels = task_data(sizes.attack_images, sizes, device)
    rows = []
    for attack, kwargs in (("fgsm", {}), ("pgd", {"steps": PAPER["pgd_steps"], "seed": 0})):
        robust_accuracy(model, images[:64], labels[:64], [1 / 255], attack=attack, **kwargs)  # warm-up
        eps = [2 / 255, 4 / 255]
        synchronize(device)
        started = time.perf_counter()
        robust_accuracy(model, images, labels, eps, attack=attack, **kwargs)
        synchronize(device)
        per_eps = (time.perf_counter() - started) / len(eps)
        steps = f", {PAPER['pgd_steps']} steps" if attack == "pgd" else ""
        rows.append(Row(attack.upper(), f"{sizes.attack_images} images{steps}", per_eps, "s/eps"))
    return rows


# ---- geometry ---------------------------------------------------------------------------------

def bench_geometry(sizes: Sizes) -> list[Row]:
    rows = []
    try:
        from contrastlab.analysis.progress import progress
    except ImportError as exc:
        rows.append(Row("progress", "", None, "s", f"skipped: {exc}"))
    else:
        probs, labels = random_probabilities(sizes.progress_models, sizes.samples, sizes.classes)
        started = time.perf_counter()
        progress(probs, labels)
        seconds = time.perf_counter() - started
        rows.append(Row("progress", f"{sizes.progress_models} models, N={sizes.samples}, C={sizes.classes} (CPU)", seconds, "s",
                        f"{sizes.progress_models / seconds:.0f} models/s", {"models": sizes.progress_models}))
    try:
        from contrastlab.analysis.inpca import inpca
    except ImportError as exc:
        rows.append(Row("InPCA", "", None, "s", f"skipped: {exc}"))
    else:
        probs, _ = random_probabilities(sizes.inpca_models, sizes.samples, sizes.classes, seed=1)
        started = time.perf_counter()
        inpca(probs, n_components=3)
        seconds = time.perf_counter() - started
        rows.append(Row("InPCA", f"M={sizes.inpca_models} models, N={sizes.samples}, C={sizes.classes}", seconds, "s",
                        extra={"models": sizes.inpca_models}))
    return rows


# ---- projection -------------------------------------------------------------------------------

def value(rows: list[Row], name: str, pick: Callable[[list[Row]], Row] | None = None) -> float | None:
    found = [r for r in rows if r.name == name and r.value is not None]
    if not found:
        return None
    return (pick(found) if pick else found[0]).value


def projection(rows: list[Row], methods: list[str]) -> list[Row]:
    """Hours of the full paper grid on this one GPU, stage by stage, from the measured rates."""
    p, out = PAPER, []
    runs = p["seeds"] * p["tasks"]  # analysed fine-tunings per method

    def add(stage: str, seconds: float | None, how: str) -> None:
        out.append(Row(f"projected: {stage}", how, None if seconds is None else seconds / 3600, "h"))

    pretrain_seconds, missing = 0.0, []
    for method in methods:
        best = value(rows, f"pretrain {method}", lambda rs: max(rs, key=lambda r: r.value))
        if best is None:
            missing.append(method)
        else:
            pretrain_seconds += p["seeds"] * p["epochs"] * p["images"] / best
    add("pretraining", None if missing else pretrain_seconds,
        f"{len(methods)} methods × {p['seeds']} seeds × {p['epochs']} epochs × {p['images']:,} images at the faster of eager/compiled")

    inference = value(rows, "encoder inference")
    probe_images = 2 * p["task_train"] + p["task_val"]  # train + val features, analysis-split predictions
    probes = (len(methods) + 1) * p["seeds"] * p["tasks"]
    add("probes", None if inference is None else probes * probe_images / inference,
        f"{probes} probes (random init included) × {probe_images:,} images of feature extraction; training on cached features not counted")

    points = value(rows, "landscape")
    landscapes = len(methods) * runs
    add("landscapes", None if points is None else landscapes * p["grid"] ** 2 / points,
        f"{landscapes} runs × {p['grid']}×{p['grid']} points")

    hvp = value(rows, "sharpness")
    add("sharpness", None if hvp is None else landscapes * p["sharpness_hvps"] * hvp,
        f"{landscapes} runs × {p['sharpness_hvps']} Hessian-vector products")

    fgsm, pgd = value(rows, "FGSM"), value(rows, "PGD")
    add("FGSM + PGD", None if fgsm is None or pgd is None else landscapes * p["eps"] * (fgsm + pgd),
        f"{landscapes} runs × {p['eps']} ε values, both attacks")

    geometry = None
    progress_row = next((r for r in rows if r.name == "progress" and r.value is not None), None)
    inpca_row = next((r for r in rows if r.name == "InPCA" and r.value is not None), None)
    if progress_row and inpca_row:
        models = p["models_per_task"] + 1  # the snapshots of a task and the truth P*
        per_model = progress_row.value / progress_row.extra["models"]
        inpca_task = inpca_row.value * (models / inpca_row.extra["models"]) ** 2  # M² distances
        geometry = p["tasks"] * (2 * models * per_model + inpca_task)  # t_w twice: √p and the raw-p option
    add("geometry", geometry, f"{p['tasks']} tasks × (progress + InPCA of {p['models_per_task'] + 1} models; InPCA scaled as M²)")

    stages = [r.value for r in out]
    total = None if any(v is None for v in stages) else sum(stages)
    out.append(Row("projected: full paper grid", "one GPU, stages back to back", total, "h",
                   "" if total is not None else "incomplete: a stage above has no measurement"))
    return out


# ---- output -----------------------------------------------------------------------------------

def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0 or (1e-2 <= abs(value) < 1e5):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:.3g}"


def table(rows: list[Row]) -> str:
    lines = ["| measurement | setting | value | unit | note |", "|---|---|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.setting} | {fmt(r.value)} | {r.unit} | {r.note} |")
    return "\n".join(lines)


def describe(device: torch.device, args: argparse.Namespace) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = " — CPU smoke run at tiny sizes: a check of the script, not a measurement" if args.cpu_smoke else ""
    return (f"contrastlab GPU benchmark{mode}\n\n{name}; torch {torch.__version__}; "
            f"CUDA {torch.version.cuda}; peak {args.peak_tflops:g} TFLOP/s; {stamp}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/gpu_results.md"), help="markdown file for the table")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200: 989)")
    parser.add_argument("--methods", nargs="+", default=list(PAPER["methods"]))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per row (default 30)")
    parser.add_argument("--landscape-grid", type=int, default=None, help="points per axis of the timed grid (default 5)")
    parser.add_argument("--cpu-smoke", action="store_true", help="run every row at tiny sizes on the CPU (checks the script)")
    args = parser.parse_args(argv)

    if args.cpu_smoke:
        device, sizes = torch.device("cpu"), Sizes(**vars(SMOKE))
        torch.set_num_threads(1)  # a check, not a measurement: one thread stays fast on a shared machine
    else:
        if not torch.cuda.is_available():
            print("benchmarks/gpu.py needs an NVIDIA GPU (torch.cuda.is_available() is False); "
                  "use --cpu-smoke to check the script on a CPU", file=sys.stderr)
            return 2
        device, sizes = torch.device("cuda", 0), Sizes()
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.steps is not None:
        sizes.steps = args.steps
    if args.landscape_grid is not None:
        sizes.landscape_grid = args.landscape_grid

    header = describe(device, args)
    print(header, file=sys.stderr)
    rows: list[Row] = []
    stages = [
        ("pretraining", lambda: bench_pretrain(sizes, device, args.methods, [False] + ([] if args.no_compile else [True]), args.peak_tflops)),
        ("encoder inference", lambda: bench_inference(sizes, device)),
        ("landscape", lambda: bench_landscape(sizes, device)),
        ("sharpness", lambda: bench_sharpness(sizes, device)),
        ("attacks", lambda: bench_attacks(sizes, device)),
        ("geometry", lambda: bench_geometry(sizes)),
    ]
    for stage, run in stages:
        started = time.perf_counter()
        try:
            new = run()
        except Exception as exc:  # noqa: BLE001 - one broken stage must not lose the others' figures
            traceback.print_exc(file=sys.stderr)
            new = [Row(stage, "", None, "", f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")]
        rows.extend(new)
        print(f"{stage}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    rows.extend(projection(rows, args.methods))

    text = header + "\n" + table(rows) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
