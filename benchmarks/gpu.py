"""The paper protocol on one NVIDIA GPU: does it run, how fast is each stage, how long would the full
paper grid take? Four parts, each a separate invocation that writes its figures to
``benchmarks/results/gpu.json`` (+ ``gpu.md``) as soon as it finishes, merged into what is there:

    python benchmarks/gpu.py                          # every part, each in its own process (~9-11 min on an H200)
    python benchmarks/gpu.py --parts study throughput # two parts (e.g. under a 10-minute limit per command) ...
    python benchmarks/gpu.py --parts analyses projection  # ... then the other two
    python benchmarks/gpu.py --cpu-smoke              # every part at tiny sizes on the CPU (a check, not a figure)

- ``study`` (≤ 5 min): ``python -m contrastlab study --preset paper`` in a subprocess, sizes shrunk
  through ``--set`` only (one seed, two tasks, two pretraining epochs on 5,000 images, small grids,
  full-width ResNet-18 on 32×32). CIFAR from the data root when both datasets are there, else
  CIFAR-format folders of random images. Per-stage seconds are the sums of each unit's ``done.json``
  ``seconds``; every ``done.json``'s ``device`` is checked for cuda.
- ``throughput`` (≤ 5 min): ``contrastlab.train.pretrain.pretrain`` per method of the paper preset's
  ``methods`` (full-width CIFAR ResNet-18, batch 256, generated 32×32 images, images/s = median of
  ``metrics.csv`` after the first epoch), eager, and for SimCLR also with ``compile=True`` — a run
  whose compile fell back to eager is labelled eager, with the reason; encoder inference
  (``extract_features``).
- ``analyses`` (≤ 5 min): one 51×51 ``loss_surface`` on 2,500 images, Hessian-vector products at the
  sharpness stage's GPU batch (512 images, ``HessianOperator``), FGSM and PGD-10 per ε on 2,500 images.
- ``projection`` (seconds, no GPU needed): the paper preset's plan (``plan_units``) counted by unit
  kind and method — every kind it runs, trajectory, representation and alignment included, and every
  method in ``methods`` — each priced by a formula from the measured rates, printed with it.

Kernels get what a study unit gets: precision as the study resolves it (bf16 pretraining on CUDA,
fp32 analyses), TF32 and cudnn.benchmark as ``unit_context`` sets them. A failed measurement is
recorded with its error; the others still run.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from common import (
    Stopwatch,
    command_line,
    environment,
    fmt,
    markdown_table,
    measure,
    merge_results,
    synchronize,
    temporary_directory,
    write_results,
)
from contrastlab.data.cifar_format import cifar_present, write_cifar_folders

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PARTS = ("study", "throughput", "analyses", "projection")
PART_TIMEOUT_S = 300  # each part fits 5 minutes on an H200; the runner stops one that does not
TARGETS = {  # name: (comparison, threshold, unit)
    "simclr_images_per_s": (">=", 25_000, "images/s"),
    "landscape_51_seconds": ("<=", 40, "s"),
    "full_grid_hours": ("<=", 1, "h"),
    "micro_study_all_cuda": ("==", True, ""),
}
# The reference sizes the analyses part times at (the paper's); the projection scales from them.
REFERENCE = {"grid": 51, "landscape_images": 2_500, "hvp_samples": 512, "attack_images": 2_500, "pgd_steps": 10}


@dataclass
class Sizes:
    """Workload sizes: the paper's on a GPU, tiny ones for --cpu-smoke."""

    width: int = 64
    image_size: int = 32
    batch: int = 256
    pretrain_images: int = 20_480  # a subset: 80 steps per epoch
    pretrain_epochs: int = 4  # epoch 1 warms up; the median of the others is the figure
    compile_methods: tuple[str, ...] = ("simclr",)  # compiling every method would not fit the part's 5 minutes
    inference_images: int = 10_000
    landscape_images: int = 2_500
    landscape_grid: int = 51
    hvp_samples: int = 512
    hvp_batch: int = 512  # the sharpness stage's GPU batch (study/context.py AUTO_BATCH_SIZES)
    hvp_products: int = 5
    attack_images: int = 2_500
    attack_eps: tuple[float, ...] = (2 / 255, 8 / 255)
    pgd_steps: int = 10
    study_timeout: int = 270
    study_threads: int | None = None  # OMP_NUM_THREADS of the study's process (None: inherited)
    data: dict = field(default_factory=lambda: {"cifar10_train_per_class": 500, "cifar10_test_per_class": 10,
                                                "cifar100_train_per_class": 50, "cifar100_test_per_class": 10})
    study: list[str] = field(default_factory=lambda: [
        "seeds=[0]", "data.tasks=[[0,1,2,3,4],[95,96,97,98,99]]",
        "data.pretrain_per_class=500", "data.downstream_train_per_class=50", "data.downstream_test_per_class=10",
        "pretrain.epochs=2", "finetune.epochs=5",
        "analysis.landscape.grid=5", "analysis.sharpness.iters=5", "analysis.sharpness.trace_samples=6",
        "analysis.sharpness.samples=128", "analysis.robustness.eps_255=[0,2,8]", "analysis.robustness.samples=250",
    ])


SMOKE = Sizes(
    width=4, image_size=16, batch=32, pretrain_images=96, pretrain_epochs=2, compile_methods=(), inference_images=64,
    landscape_images=32, landscape_grid=3, hvp_samples=16, hvp_batch=8, hvp_products=2, attack_images=32,
    attack_eps=(8 / 255,), pgd_steps=2, study_timeout=240, study_threads=1,
    data={"cifar10_train_per_class": 10, "cifar10_test_per_class": 2, "cifar100_train_per_class": 4, "cifar100_test_per_class": 2},
    study=["seeds=[0]", "data.tasks=[[0,1,2,3,4]]", "methods=[simclr]", "model.width=2", "data.image_size=8",
           "data.pretrain_per_class=10", "pretrain.epochs=1", "pretrain.batch_size=50", "finetune.epochs=1",
           "analysis.landscape.grid=3", "analysis.landscape.samples=10", "analysis.sharpness.samples=10",
           "analysis.sharpness.iters=2", "analysis.sharpness.trace_samples=3", "analysis.robustness.eps_255=[0,8]",
           "analysis.robustness.pgd_steps=1", "analysis.robustness.samples=10",
           "analysis.pretraining_trajectory.enabled=false", "analysis.representation.enabled=false"],
)


def error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1][:300] if text else ''}"


def guarded(name: str, fn: Callable[[], dict], errors: dict) -> dict | None:
    """``fn()``, or None with its error recorded: one broken kernel must not lose the other figures."""
    started = time.perf_counter()
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        errors[name] = error_text(exc)
        return None
    finally:
        print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def paper_config():
    from contrastlab.config_checks import load_config

    return load_config("paper")


def unit_settings(device: torch.device) -> dict:
    """What the study sets on a device before a unit runs (TF32 and cuDNN autotuning on CUDA)."""
    from contrastlab.study.context import enable_cudnn_benchmark, enable_tf32

    return {"tf32": enable_tf32(device), "cudnn_benchmark": enable_cudnn_benchmark(device)}


def precision_for(kind: str, device: torch.device) -> str:
    from contrastlab.study.context import resolve_precision

    return resolve_precision(paper_config().precision, device, kind)


# ---- study: the micro paper study through the CLI ---------------------------------------------------------

def stage_times(run_dir: Path) -> dict:
    """Per-kind seconds and units from every DIR/**/done.json, and the devices/precisions they name."""
    seconds: dict[str, float] = defaultdict(float)
    units: Counter = Counter()
    devices: Counter = Counter()
    precisions: Counter = Counter()
    for marker in sorted(run_dir.glob("**/done.json")):
        done = json.loads(marker.read_text())
        kind = str(done.get("kind"))
        seconds[kind] += float(done.get("seconds", 0.0))
        units[kind] += 1
        devices[str(done.get("device", "missing"))] += 1
        precisions[str(done.get("precision", "missing"))] += 1
    total = sum(units.values())
    cuda = sum(n for d, n in devices.items() if d.startswith("cuda"))
    return {
        "units": total, "stage_seconds": {k: round(v, 3) for k, v in sorted(seconds.items())},
        "stage_units": dict(sorted(units.items())), "devices": dict(devices), "precisions": dict(precisions),
        "all_cuda": bool(total) and cuda == total,
        "done_json_has_device": bool(total) and "missing" not in devices,
        "done_json_has_precision": bool(total) and "missing" not in precisions,
    }


def micro_study(sizes: Sizes, data_root: Path | None, work: Path) -> dict:
    root = data_root if data_root is not None and cifar_present(data_root) else None
    data_note = f"CIFAR archives/folders at {root}"
    if root is None:
        root = write_cifar_folders(work / "data", **sizes.data)
        data_note = f"generated CIFAR-format folders (random images, {sizes.data})"
    run_dir = work / "study"
    overrides = [f"data.root={root}", *sizes.study]
    command = [sys.executable, "-m", "contrastlab", "study", "--preset", "paper", "--out", str(run_dir), "--no-progress"]
    for item in overrides:
        command += ["--set", item]
    result: dict = {"command": " ".join(["python", *command[1:]]), "overrides": overrides, "data": data_note}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if sizes.study_threads is not None:
        env["OMP_NUM_THREADS"] = str(sizes.study_threads)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=sizes.study_timeout)
        result["returncode"] = done.returncode
        if done.returncode != 0:
            result["error"] = (done.stderr or done.stdout).strip()[-2000:]
    except subprocess.TimeoutExpired:
        result["returncode"] = None
        result["error"] = f"timed out after {sizes.study_timeout} s"
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    result.update(stage_times(run_dir))
    result["report_and_overhead_seconds"] = round(result["wall_seconds"] - sum(result["stage_seconds"].values()), 2)
    return result


# ---- throughput: pretraining and encoder inference ---------------------------------------------------------

def generated_imageset(n: int, size: int, classes: int = 10, seed: int = 0):
    from contrastlab.data import ImageSet

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return ImageSet(images=images, labels=np.arange(n) % classes, classes=[f"class{i}" for i in range(classes)],
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="generated")


class _Warnings(logging.Handler):
    """Collects the warning lines of a logger (pretrain's compile fallback says so in one)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def pretrain_row(data, sizes: Sizes, device: torch.device, method: str, compile_: bool) -> dict:
    """One pretraining run: images/s after the first epoch, and whether it really ran compiled."""
    from pretrain_call import pretrain

    precision = precision_for("pretrain", device)
    entry = {"precision": precision, "images": sizes.pretrain_images, "batch": sizes.batch, "width": sizes.width,
             "image_size": sizes.image_size, "epochs": sizes.pretrain_epochs, "mode": "compiled" if compile_ else "eager"}
    warnings, logger = _Warnings(), logging.getLogger("contrastlab.train.pretrain")
    logger.addHandler(warnings)
    try:
        with tempfile.TemporaryDirectory(prefix=f"gpu-bench-{method}-") as folder:
            with Stopwatch(device) as watch:
                pretrain(data, folder, method=method, seed=0, width=sizes.width, epochs=sizes.pretrain_epochs, batch_size=sizes.batch,
                         device=device, precision=precision, compile=compile_)
            with open(Path(folder) / "metrics.csv", newline="") as f:
                rates = [float(row["images_per_s"]) for row in csv.DictReader(f)]
    finally:
        logger.removeHandler(warnings)
    fallback = [line for line in warnings.lines if "training eagerly" in line]
    if compile_ and fallback:  # the compiler failed: these are eager figures, labelled so
        entry.update(mode="eager", compile_fallback=fallback[0])
    return {**entry, "per_epoch": [round(r, 1) for r in rates], "wall_seconds": round(watch.seconds, 2),
            "images_per_s": float(np.median(rates[1:] if len(rates) > 1 else rates))}


def bench_pretrain(sizes: Sizes, device: torch.device, methods: list[str], compile_too: bool) -> dict:
    """Per method: its runs (eager; compiled where asked) and the best images/s of the runs that worked."""
    data = generated_imageset(sizes.pretrain_images, sizes.image_size)
    out: dict = {}
    for method in methods:
        runs = []
        for compile_ in (False, True) if compile_too and method in sizes.compile_methods else (False,):
            try:
                runs.append(pretrain_row(data, sizes, device, method, compile_))
            except Exception as exc:  # noqa: BLE001 - a failed row is recorded; the others still run
                traceback.print_exc()
                runs.append({"mode": "compiled" if compile_ else "eager", "images_per_s": None, "error": error_text(exc)})
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rates = [run["images_per_s"] for run in runs if run.get("images_per_s")]
        out[method] = {"runs": runs, "best_images_per_s": max(rates) if rates else None}
    return out


def task_model(sizes: Sizes, device: torch.device, classes: int = 5):
    """CIFAR ResNet-18 + 5-way linear probe in eval mode (random weights: timing does not depend on them)."""
    from contrastlab.models import build_encoder, classifier, linear_classifier

    torch.manual_seed(0)
    encoder = build_encoder("resnet18", width=sizes.width, in_channels=3)
    return classifier(encoder, linear_classifier(encoder.feature_dim, classes)).to(device).eval()


def task_data(n: int, sizes: Sizes, device: torch.device, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, sizes.image_size, sizes.image_size, generator=generator)
    return images.to(device), (torch.arange(n) % classes).to(device)


def bench_inference(sizes: Sizes, device: torch.device) -> dict:
    from contrastlab.train.finetune import extract_features

    encoder = task_model(sizes, device)[0]
    images = np.random.default_rng(0).integers(0, 256, (sizes.inference_images, sizes.image_size, sizes.image_size, 3), dtype=np.uint8)
    timing = measure(lambda: extract_features(encoder, images, device=device), device=device, repeats=3, warmup=1)
    return {"images": sizes.inference_images, "seconds": timing.median, "images_per_s": sizes.inference_images / timing.median,
            "note": "extract_features: uint8 host images -> device, eval, inference_mode, features back to host"}


def throughput_part(sizes: Sizes, device: torch.device, args: argparse.Namespace) -> dict:
    errors: dict = {}
    methods = args.methods or list(paper_config().methods)
    pretrain = guarded("pretrain", lambda: bench_pretrain(sizes, device, methods, not args.skip_compile), errors)
    inference = guarded("encoder inference", lambda: bench_inference(sizes, device), errors)
    return {"pretrain": pretrain, "inference": inference, "errors": errors, "device_settings": unit_settings(device)}


# ---- analyses: landscape, Hessian-vector products, attacks --------------------------------------------------

def bench_landscape(sizes: Sizes, device: torch.device) -> dict:
    from contrastlab.analysis.directions import random_directions
    from contrastlab.analysis.landscape import SurfaceSettings, loss_surface

    model = task_model(sizes, device)
    images, labels = task_data(sizes.landscape_images, sizes, device)
    directions = random_directions(model, n=2, seed=0)
    axis = np.linspace(-1.0, 1.0, sizes.landscape_grid)
    settings = SurfaceSettings(precision=precision_for("landscape", device))  # batch: the kernel's default, as the stage's
    loss_surface(model, images, labels, directions, axis[:1], axis[:1], settings)  # warm-up
    with Stopwatch(device) as watch:
        loss_surface(model, images, labels, directions, axis, axis, settings)
    points = sizes.landscape_grid ** 2
    scale = REFERENCE["grid"] ** 2 / points * REFERENCE["landscape_images"] / sizes.landscape_images
    return {"grid": sizes.landscape_grid, "images": sizes.landscape_images, "seconds": watch.seconds, "points_per_s": points / watch.seconds,
            "seconds_at_51x51": watch.seconds * scale, "precision": settings.precision}


def bench_hvp(sizes: Sizes, device: torch.device) -> dict:
    """Products at the sharpness stage's GPU batch (512), graphs kept as the stage keeps them when they fit."""
    from contrastlab.analysis.hessian import HessianOperator, HessianSettings

    model = task_model(sizes, device)
    images, labels = task_data(sizes.hvp_samples, sizes, device)
    settings = HessianSettings(batch_size=sizes.hvp_batch, precision=precision_for("sharpness", device))
    with HessianOperator(model, images, labels, settings) as hessian:
        vector = torch.randn(hessian.dim, generator=torch.Generator().manual_seed(0)).to(device)
        with Stopwatch(device) as first:
            hessian.matvec(vector)  # builds the kept graphs when they fit the budget
        timing = measure(lambda: hessian.matvec(vector), device=device, repeats=sizes.hvp_products, warmup=0)
        kept = hessian.graphs_kept
    return {"samples": sizes.hvp_samples, "batch": sizes.hvp_batch, "parameters": hessian.dim, "precision": settings.precision,
            "graphs_kept": kept, "first_product_seconds": first.seconds, "seconds_per_product": timing.median,
            "seconds_per_product_at_512": timing.median * REFERENCE["hvp_samples"] / sizes.hvp_samples}


def bench_attacks(sizes: Sizes, device: torch.device) -> dict:
    from contrastlab.analysis.attacks import robust_accuracy

    model = task_model(sizes, device)
    images, labels = task_data(sizes.attack_images, sizes, device)
    precision, out = precision_for("robustness", device), {}
    batch = 1024 if device.type == "cuda" else 256  # the stage's auto batch (AUTO_BATCH_SIZES)
    for attack, extra in (("fgsm", {}), ("pgd", {"steps": sizes.pgd_steps, "seed": 0})):
        robust_accuracy(model, images[:64], labels[:64], [1 / 255], attack, batch, precision=precision, **extra)  # warm-up
        with Stopwatch(device) as watch:
            robust_accuracy(model, images, labels, list(sizes.attack_eps), attack, batch, precision=precision, **extra)
        per_eps = watch.seconds / len(sizes.attack_eps)
        passes = (REFERENCE["pgd_steps"] + 1) / (sizes.pgd_steps + 1) if attack == "pgd" else 1
        out[attack] = {"precision": precision, "images": sizes.attack_images, "batch": batch, "seconds_per_eps": per_eps,
                       "seconds_per_eps_at_2500": per_eps * REFERENCE["attack_images"] / sizes.attack_images * passes,
                       **({"steps": sizes.pgd_steps} if attack == "pgd" else {})}
    return out


def analyses_part(sizes: Sizes, device: torch.device, args: argparse.Namespace) -> dict:
    errors: dict = {}
    settings = unit_settings(device)
    if args.landscape_grid is not None:
        sizes.landscape_grid = args.landscape_grid
    return {"landscape": guarded("landscape", lambda: bench_landscape(sizes, device), errors),
            "hvp": guarded("Hessian-vector product", lambda: bench_hvp(sizes, device), errors),
            "attacks": guarded("attacks", lambda: bench_attacks(sizes, device), errors),
            "errors": errors, "device_settings": settings}


def study_part(sizes: Sizes, device: torch.device, args: argparse.Namespace) -> dict:
    errors: dict = {}
    data_root = args.data_root or Path(os.environ.get("CONTRASTLAB_DATA") or Path.home() / ".cache" / "contrastlab")
    with temporary_directory("gpu-study-", keep=args.keep) as work:
        study = guarded("micro study", lambda: micro_study(sizes, data_root, work), errors)
        if args.keep and study:
            study["run_dir"] = str(work / "study")
    return {"study": study, "errors": errors}
# ---- projection: the paper preset's plan, priced unit kind by unit kind ------------------------------------

# Images per class of the paper's datasets when the config keeps them all (None).
DATASET_PER_CLASS = {"cifar10": {"train": 5_000, "classes": 10}, "cifar100": {"train": 500, "test": 100}}


@dataclass(frozen=True)
class Rates:
    """The measured figures the projection prices units with (None where a part has not run or failed)."""

    pretrain: dict  # method -> images/s
    inference: float | None  # images/s
    landscape_51: float | None  # seconds of one 51×51 landscape on 2,500 images
    hvp_512: float | None  # seconds of one Hessian-vector product on 512 images
    fgsm_2500: float | None  # seconds per ε on 2,500 images
    pgd10_2500: float | None  # seconds per ε of PGD-10 on 2,500 images

    @classmethod
    def of(cls, results: dict) -> Rates:
        t, a = results.get("throughput") or {}, results.get("analyses") or {}
        pre, attacks = t.get("pretrain") or {}, a.get("attacks") or {}
        return cls({m: (e or {}).get("best_images_per_s") for m, e in pre.items()}, (t.get("inference") or {}).get("images_per_s"),
                   (a.get("landscape") or {}).get("seconds_at_51x51"), (a.get("hvp") or {}).get("seconds_per_product_at_512"),
                   (attacks.get("fgsm") or {}).get("seconds_per_eps_at_2500"), (attacks.get("pgd") or {}).get("seconds_per_eps_at_2500"))


def data_sizes(config) -> dict:
    """Pretraining images and one task's train / test images of ``config`` (paper datasets, all images unless cut)."""
    d, ways = config.data, len(config.data.tasks[0])
    pre, down = DATASET_PER_CLASS[d.pretrain], DATASET_PER_CLASS[d.downstream]
    per_class = min(pre["train"], d.pretrain_per_class or pre["train"])
    return {"pretrain": per_class * pre["classes"],
            "task_train": ways * min(down["train"], d.downstream_train_per_class or down["train"]),
            "task_test": ways * min(down["test"], d.downstream_test_per_class or down["test"])}


def need(value: float | None, what: str) -> float:
    if not value:
        raise LookupError(f"no measured {what}")
    return float(value)


# Unit kind -> (config, data sizes, rates, unit) -> (seconds of that unit, formula of that unit's kind).
def _pretrain(c, n, r, unit):
    from contrastlab.study.plan import RANDOM

    if unit.method == RANDOM:
        return 0.0, "random init: no training"
    rate = need(r.pretrain.get(unit.method), f"{unit.method} pretraining images/s")
    return c.pretrain.epochs * n["pretrain"] / rate, f"{c.pretrain.epochs} epochs × {n['pretrain']:,} images / ({unit.method}: {rate:,.0f} images/s)"


def _finetune(c, n, r, unit):
    rate = need(r.inference, "inference images/s")
    images = n["task_train"] + n["task_test"]
    return images / rate, f"({n['task_train']:,} + {n['task_test']:,}) images / {rate:,.0f} images/s (features; probe epochs on cached features not counted)"


def _landscape(c, n, r, unit):
    s = c.analysis.landscape
    samples = s.samples or n["task_train"]
    factor = (s.grid / REFERENCE["grid"]) ** 2 * samples / REFERENCE["landscape_images"] * (2 if s.compare_seeding else 1)
    return need(r.landscape_51, "landscape time") * factor, f"{r.landscape_51:.2f} s per 51×51 on 2,500 images × ({s.grid}/51)² × {samples:,}/2,500"


def _sharpness(c, n, r, unit):
    s = c.analysis.sharpness
    products = s.iters + s.trace_samples + 1  # + the first, which builds the graphs
    per = need(r.hvp_512, "Hessian-vector product time") * (s.samples or n["task_train"]) / REFERENCE["hvp_samples"]
    return products * per, f"({s.iters} Lanczos + {s.trace_samples} Hutch++ + 1) products × {per:.4f} s"


def _robustness(c, n, r, unit):
    s = c.analysis.robustness
    images = s.samples or n["task_train"]
    fgsm = need(r.fgsm_2500, "FGSM time") * images / REFERENCE["attack_images"]
    pgd = need(r.pgd10_2500, "PGD time") * images / REFERENCE["attack_images"] * (s.pgd_steps + 1) / (REFERENCE["pgd_steps"] + 1)
    runs = {"fgsm": fgsm, "pgd": pgd}
    seconds = len(s.eps_255) * (sum(runs[a] for a in s.attacks) + (fgsm if s.compare_spaces and "fgsm" in s.attacks else 0))
    return seconds, f"{len(s.eps_255)} ε × ({' + '.join(s.attacks)}{' + fgsm in the other space' if s.compare_spaces else ''}) on {images:,} images"


def _trajectory(c, n, r, unit):
    from contrastlab.config_checks import trajectory_epochs

    checkpoints = len(trajectory_epochs(c))
    rate = need(r.inference, "inference images/s")
    images = n["task_train"] + n["task_test"]
    return checkpoints * images / rate, f"{checkpoints} checkpoints × ({images:,} images / {rate:,.0f} images/s) (probe fits not counted)"


def _representation(c, n, r, unit):
    encoders = len(unit.inputs)
    samples = c.analysis.representation.samples or n["task_train"]
    return encoders * samples / need(r.inference, "inference images/s"), f"{encoders} encoders × {samples} images / inference images/s (+ CKA on the CPU)"


def _alignment(c, n, r, unit):
    pairs = c.analysis.representation.pairs
    return 2 * pairs / need(r.inference, "inference images/s"), f"2 × {pairs} augmented images / inference images/s"


def _geometry(c, n, r, unit):
    return 0.0, "InPCA and t_w of one task's snapshots: seconds on the CPU, not counted"


UNIT_COSTS = {"pretrain": _pretrain, "finetune": _finetune, "landscape": _landscape, "sharpness": _sharpness,
              "robustness": _robustness, "trajectory": _trajectory, "representation": _representation,
              "alignment": _alignment, "geometry": _geometry}


def projection(results: dict) -> dict:
    """Hours of the full paper grid on this one GPU: every unit of the paper preset's plan, priced by its kind."""
    from contrastlab.study.plan import plan_units

    config = paper_config()
    sizes, rates, units = data_sizes(config), Rates.of(results), plan_units(config)
    kinds: dict[str, dict] = {}
    missing: dict[str, str] = {}
    for unit in units:
        kind = kinds.setdefault(unit.kind, {"units": 0, "seconds": 0.0, "formulas": set(), "methods": Counter()})
        kind["units"] += 1
        kind["methods"][unit.method or "-"] += 1
        cost = UNIT_COSTS.get(unit.kind)
        try:
            if cost is None:
                raise LookupError(f"no cost model for unit kind {unit.kind!r}")
            seconds, formula = cost(config, sizes, rates, unit)
        except LookupError as exc:
            missing[unit.kind] = str(exc)
            continue
        kind["seconds"] += seconds
        kind["formulas"].add(formula)
    for kind in kinds.values():
        kind.update(hours=kind["seconds"] / 3600, formulas=sorted(kind["formulas"]), methods=dict(kind["methods"]))
    total = None if missing else sum(k["hours"] for k in kinds.values())
    return {"kinds": kinds, "missing": missing, "total_hours": total, "units": len(units), "methods": list(config.methods),
            "data": sizes, "formula": "total = Σ over the paper preset's units (plan_units) of the unit's kind formula, "
                                      "run back to back on one GPU"}


def projection_part(sizes: Sizes, device: torch.device, args: argparse.Namespace) -> dict:
    stored = merge_results(Path(args.out) / "gpu.json", {})
    return {"projection": projection(stored)}


# ---- targets and the record -------------------------------------------------------------------------------

def check_targets(results: dict) -> dict:
    simclr = ((results.get("throughput") or {}).get("pretrain") or {}).get("simclr") or {}
    values = {"simclr_images_per_s": simclr.get("best_images_per_s"),
              "landscape_51_seconds": ((results.get("analyses") or {}).get("landscape") or {}).get("seconds_at_51x51"),
              "full_grid_hours": ((results.get("projection") or {}).get("projection") or {}).get("total_hours"),
              "micro_study_all_cuda": ((results.get("study") or {}).get("study") or {}).get("all_cuda")}
    out = {}
    for name, (op, threshold, unit) in TARGETS.items():
        value = values[name]
        met = None if value is None else {">=": value >= threshold, "<=": value <= threshold, "==": value == threshold}[op]
        out[name] = {"value": value, "target": f"{op} {threshold}", "unit": unit, "met": met}
    return out


def study_lines(part: dict | None) -> list[str]:
    study = (part or {}).get("study")
    if not study:
        return []
    rows = [[k, study["stage_units"][k], fmt(v)] for k, v in study["stage_seconds"].items()]
    lines = ["## study: the micro paper study through the CLI", "", f"`{study['command']}`", "",
             f"Data: {study['data']}. Return code {study.get('returncode')}, wall {fmt(study['wall_seconds'])} s, {study['units']} units; "
             f"done.json devices {study['devices']}, all cuda: {study['all_cuda']}.", "",
             markdown_table(["stage (kind)", "units", "seconds"], rows, "lrr"), ""]
    return lines + (["Error (tail):", "", "```", study["error"][-1200:], "```", ""] if study.get("error") else [])


def measurement_rows(results: dict) -> list[list]:
    t, a, rows = results.get("throughput") or {}, results.get("analyses") or {}, []
    for method, entry in (t.get("pretrain") or {}).items():
        for run in entry["runs"]:
            setting = f"{run['mode']}, {run.get('precision', '')}, batch {run.get('batch', '')}, width {run.get('width', '')}"
            rows.append([f"pretrain {method}", setting, fmt(run.get("images_per_s")), "images/s", run.get("error") or run.get("compile_fallback", "")])
    if t.get("inference"):
        rows.append(["encoder inference", f"{t['inference']['images']:,} images", fmt(t["inference"]["images_per_s"]), "images/s", ""])
    if a.get("landscape"):
        ls = a["landscape"]
        rows.append(["landscape", f"{ls['grid']}×{ls['grid']} on {ls['images']:,} images, {ls['precision']}", fmt(ls["seconds"]), "s",
                     f"{fmt(ls['points_per_s'])} points/s"])
    if a.get("hvp"):
        h = a["hvp"]
        rows.append(["Hessian-vector product", f"{h['samples']} images in batches of {h['batch']}, graphs kept: {h['graphs_kept']}",
                     fmt(h["seconds_per_product"]), "s/HVP", f"first (builds graphs) {fmt(h['first_product_seconds'])} s"])
    for attack, entry in (a.get("attacks") or {}).items():
        rows.append([attack.upper(), f"{entry['images']:,} images, batch {entry['batch']}", fmt(entry["seconds_per_eps"]), "s/ε", ""])
    for part in ("throughput", "analyses", "study"):
        for name, error in ((results.get(part) or {}).get("errors") or {}).items():
            rows.append([name, "", "—", "", f"failed: {error}"])
    return rows


def markdown(results: dict) -> str:
    env = results.get("environment") or {}
    smoke = " — CPU smoke run at tiny sizes: a check of the script, not a measurement" if results.get("mode") == "cpu-smoke" else ""
    lines = [f"# contrastlab on one GPU{smoke}", "", f"{env.get('device_name')}; torch {env.get('torch')}; CUDA {env.get('cuda')}", ""]
    rows = [[name, str(t["value"]) if isinstance(t["value"], bool) else fmt(t["value"]), t["unit"], t["target"],
             {True: "yes", False: "**no**", None: "—"}[t["met"]]] for name, t in results.get("targets", {}).items()]
    lines += ["## Targets", "", markdown_table(["target", "value", "unit", "required", "met"], rows, "lrllr"), ""]
    lines += study_lines(results.get("study"))
    lines += ["## throughput and analyses", "", markdown_table(["measurement", "setting", "value", "unit", "note"], measurement_rows(results), "llrll"), ""]
    proj = (results.get("projection") or {}).get("projection")
    if proj:
        rows = [[kind, k["units"], fmt(k["hours"]), "; ".join(k["formulas"])] for kind, k in proj["kinds"].items()]
        rows.append(["**full paper grid**", proj["units"], fmt(proj["total_hours"]), proj["formula"]])
        missing = "".join(f"\n- {kind}: {why}" for kind, why in proj["missing"].items())
        lines += ["## projection: the full paper grid on this GPU", "", markdown_table(["unit kind", "units", "hours", "formula per unit"], rows, "lrrl"),
                  "", f"Methods: {', '.join(proj['methods'])}." + (f" Not priced:{missing}" if missing else ""), ""]
    return "\n".join(lines)


# ---- running the parts ------------------------------------------------------------------------------------

PART_RUNNERS = {"study": study_part, "throughput": throughput_part, "analyses": analyses_part, "projection": projection_part}


def save_part(out: Path, part: str, figures: dict, mode: str, device: torch.device) -> Path:
    """Merge one part's figures into OUT/gpu.json (the other parts' kept) and rewrite gpu.md from the whole."""
    results = merge_results(out / "gpu.json", {part: {**figures, "command": command_line(), "environment": environment(device)}})
    results.update(mode=mode, environment=environment(device))
    if part != "projection" and "projection" in results:  # the projection priced older figures: price these
        results["projection"] = {**results["projection"], "projection": projection(results)}
    results["targets"] = check_targets(results)
    json_path, _ = write_results(out / "gpu.json", results, markdown(results), command=command_line())
    return json_path


def run_each_in_its_own_process(args: argparse.Namespace, parts: list[str]) -> int:
    """Every part as its own invocation of this script, one after the other, each stopped after PART_TIMEOUT_S:
    a part that crashes or runs out of time loses only its own figures."""
    failed = []
    for part in parts:
        command = [sys.executable, __file__, "--parts", part, "--out", str(args.out), *(["--cpu-smoke"] if args.cpu_smoke else []),
                   *(["--skip-compile"] if args.skip_compile else [])]
        started = time.perf_counter()
        try:
            code = subprocess.run(command, cwd=REPO, timeout=PART_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            code = "timed out"
        print(f"part {part}: {time.perf_counter() - started:.0f} s, exit {code}", file=sys.stderr, flush=True)
        if code != 0:
            failed.append(part)
    print((Path(args.out) / "gpu.md").read_text() if (Path(args.out) / "gpu.md").exists() else "", flush=True)
    return 1 if failed else 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=None, help="run these parts in this process (default: every "
                        "part, each in its own process)")
    parser.add_argument("--out", type=Path, default=None, help="folder of gpu.json and gpu.md (default: benchmarks/results; "
                        "with --cpu-smoke a new temporary folder)")
    parser.add_argument("--cpu-smoke", action="store_true", help="every part at tiny sizes on the CPU (checks the script)")
    parser.add_argument("--methods", nargs="+", default=None, help="pretraining methods timed (default: the paper preset's methods)")
    parser.add_argument("--skip-compile", action="store_true", help="no compiled pretraining run")
    parser.add_argument("--data-root", type=Path, default=None, help="where CIFAR may be (default: $CONTRASTLAB_DATA or ~/.cache/contrastlab)")
    parser.add_argument("--landscape-grid", type=int, default=None, help="points per axis of the timed landscape (default 51)")
    parser.add_argument("--keep", action="store_true", help="keep the micro study's run directory and data")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="gpu-smoke-")) if args.cpu_smoke else RESULTS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not args.cpu_smoke and not torch.cuda.is_available() and args.parts != ["projection"]:
        print("benchmarks/gpu.py needs an NVIDIA GPU (torch.cuda.is_available() is False); use --cpu-smoke to check the "
              "script on a CPU", file=sys.stderr)
        return 2
    if args.parts is None:
        return run_each_in_its_own_process(args, list(PARTS))
    device = torch.device("cpu") if args.cpu_smoke or not torch.cuda.is_available() else torch.device("cuda", 0)
    sizes = Sizes(**asdict(SMOKE)) if args.cpu_smoke else Sizes()
    if args.cpu_smoke:
        torch.set_num_threads(1)  # a check, not a measurement
    for part in args.parts:
        figures = PART_RUNNERS[part](sizes, device, args)
        synchronize(device)
        path = save_part(Path(args.out), part, figures, "cpu-smoke" if args.cpu_smoke else "gpu", device)
        print(f"{part}: wrote {path}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
