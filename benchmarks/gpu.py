"""The paper protocol on one NVIDIA GPU: does it run there, how fast is each stage, and how long
would the full paper grid take?

    python benchmarks/gpu.py                         # one CUDA GPU, ~6-8 minutes; writes benchmarks/results/gpu.{json,md}
    python benchmarks/gpu.py --skip-compile          # without the torch.compile rows (if pretrain() offers compile=)
    python benchmarks/gpu.py --parts study           # only (a); --parts throughput: only (b) + (c)
    python benchmarks/gpu.py --cpu-smoke --out tmp/  # everything tiny on the CPU in well under a minute (a check, not a figure)

Three parts, each timing the real code (nothing here re-implements a stage):

(a) micro study: ``python -m contrastlab study --preset paper --out DIR --set ...`` in a subprocess,
    the paper preset with sizes shrunk through ``--set`` only (one seed, two tasks, two
    pretraining epochs on 5,000 images, small grids; full-width ResNet-18 on 32×32 images).
    CIFAR comes from the data root (``--data-root``, else ``$CONTRASTLAB_DATA``, else
    ``~/.cache/contrastlab``) when both datasets are there, else from CIFAR-format folders of random
    images written into a temporary folder (extracted layout: read without the archive checksum).
    Per-stage seconds are the sums of each unit's own ``done.json`` ``seconds`` per ``kind``; every
    ``done.json``'s ``device`` and ``precision`` are collected and checked for cuda.
(b) throughput at paper sizes with the library's kernels: ``contrastlab.train.pretrain.pretrain`` per
    method (SimCLR, SupCon, SupCE; full-width CIFAR ResNet-18, batch 256, a few epochs of a
    subset of generated 32×32 images; images/s = median of ``metrics.csv`` ``images_per_s`` after
    the first epoch; eager, and compiled when ``pretrain`` accepts ``compile=``), encoder
    inference (``contrastlab.train.finetune.extract_features``), one 51×51 ``loss_surface`` over
    2,500 images on encoder + probe, one Hessian-vector product on 512 images
    (``hessian_operator``), FGSM and 10-step PGD per ε on 2,500 images (``robust_accuracy``).
(c) the projected wall time of the full paper grid from (b), stage by stage, formulas printed.

Each measurement that fails is recorded with its error; the others still run. Kernels get the
settings a study unit gets: ``precision=`` as the study resolves it per stage (``--precision auto``:
bf16 pretraining on CUDA, fp32 analyses; passed only to kernels whose signature has it) and TF32
as the study enables it; nothing else is switched on here (no cudnn.benchmark).
Writes ``OUT/gpu.json`` and ``OUT/gpu.md`` (OUT: ``benchmarks/results``, or ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from contrastlab.data.cifar_format import cifar_present, write_cifar_folders
from common import (
    Stopwatch,
    command_line,
    environment,
    fmt,
    markdown_table,
    measure,
    synchronize,
    temporary_directory,
    write_results,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
METHODS = ("simclr", "supcon", "supce")

# The full paper grid (docs/design-notes.md, preset `paper`).
PAPER = {
    "methods": 3, "seeds": 4, "tasks": 4, "epochs": 200, "pretrain_images": 50_000,
    "task_train": 2_500, "task_val": 500, "grid": 51, "landscape_images": 2_500,
    "lanczos_steps": 20, "trace_samples": 20, "sharpness_samples": 512,
    "eps": 16, "attack_images": 2_500, "pgd_steps": 10,
}
TARGETS = {  # name: (comparison, threshold, unit)
    "simclr_images_per_s": (">=", 25_000, "images/s"),
    "supce_images_per_s": (">=", 50_000, "images/s"),
    "landscape_51_seconds": ("<=", 40, "s"),
    "full_grid_hours": ("<=", 1, "h"),
    "micro_study_all_cuda": ("==", True, ""),
}


@dataclass
class Sizes:
    """Workload sizes: paper sizes for the GPU, tiny ones for --cpu-smoke."""

    width: int = 64
    image_size: int = 32
    batch: int = 256
    pretrain_images: int = 20_480  # a subset: 80 steps per epoch
    pretrain_epochs: int = 4  # epoch 1 warms up; the median of the others is the figure
    inference_images: int = 10_000
    landscape_images: int = 2_500
    landscape_grid: int = 51
    hvp_samples: int = 512
    hvp_products: int = 3
    attack_images: int = 2_500
    attack_eps: tuple[float, ...] = (2 / 255, 8 / 255)
    pgd_steps: int = 10
    study_timeout: int = 360
    study_threads: int | None = None  # OMP_NUM_THREADS of the study's process (None: inherited)
    # data written when the CIFAR archives are absent, per class
    data: dict = field(default_factory=lambda: {"cifar10_train_per_class": 500, "cifar10_test_per_class": 10,
                                                "cifar100_train_per_class": 50, "cifar100_test_per_class": 10})
    # the micro study: the paper preset shrunk through --set only
    study: list[str] = field(default_factory=lambda: [
        "seeds=[0]", "data.tasks=[[0,1,2,3,4],[95,96,97,98,99]]",
        "data.pretrain_per_class=500", "data.downstream_train_per_class=50", "data.downstream_test_per_class=10",
        "pretrain.epochs=2", "finetune.epochs=5",
        "analysis.landscape.grid=5", "analysis.sharpness.iters=5", "analysis.sharpness.trace_samples=6",
        "analysis.sharpness.samples=128", "analysis.robustness.eps_255=[0,2,8]", "analysis.robustness.samples=250",
    ])


SMOKE = Sizes(
    width=4, image_size=16, batch=32, pretrain_images=96, pretrain_epochs=3, inference_images=64,
    landscape_images=32, landscape_grid=3, hvp_samples=16, hvp_products=2, attack_images=32,
    attack_eps=(8 / 255,), pgd_steps=2, study_timeout=240, study_threads=1,
    data={"cifar10_train_per_class": 10, "cifar10_test_per_class": 2,
          "cifar100_train_per_class": 4, "cifar100_test_per_class": 2},
    study=["seeds=[0]", "data.tasks=[[0,1,2,3,4]]", "methods=[simclr]", "model.width=2", "data.image_size=8",
           "data.pretrain_per_class=10", "pretrain.epochs=1", "pretrain.batch_size=50", "finetune.epochs=1",
           "analysis.landscape.grid=3", "analysis.landscape.samples=10", "analysis.sharpness.samples=10",
           "analysis.sharpness.iters=2", "analysis.sharpness.trace_samples=3", "analysis.robustness.eps_255=[0,8]",
           "analysis.robustness.pgd_steps=1", "analysis.robustness.samples=10"],
)


def error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1][:300] if text else ''}"


def signature(fn) -> str:
    try:
        return f"{fn.__module__}.{fn.__qualname__}{inspect.signature(fn)}"
    except (TypeError, ValueError):
        return repr(fn)


def accepts(fn, name: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def supported(fn, **options) -> dict:
    """The ``options`` that ``fn`` names in its signature (kernels gain options over time; pass only known ones)."""
    return {name: value for name, value in options.items() if value is not None and accepts(fn, name)}


def resolved_precision(requested: str, device: torch.device, kind: str) -> str:
    """The precision the study gives a unit of ``kind`` ("auto": bf16 for pretraining on CUDA, else fp32)."""
    if requested != "auto":
        return requested
    try:
        from contrastlab.study.context import resolve_precision
    except ImportError:
        return "bf16" if device.type == "cuda" and kind == "pretrain" else "fp32"
    return resolve_precision(requested, device, kind)


def study_device_settings(device: torch.device) -> bool | None:
    """Apply what the study sets on a device before running a unit (TF32 on CUDA); whether TF32 is on."""
    try:
        from contrastlab.study.context import enable_tf32
    except ImportError:
        return None
    return bool(enable_tf32(device))


# ---- (a) micro study through the CLI ------------------------------------------------------------

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


# ---- (b) throughput at paper sizes ---------------------------------------------------------------

def generated_imageset(n: int, size: int, classes: int = 10, seed: int = 0):
    from contrastlab.data import ImageSet

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % classes
    return ImageSet(images=images, labels=labels, classes=[f"class{i}" for i in range(classes)],
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="generated")


def read_rates(metrics: Path) -> list[float]:
    with open(metrics, newline="") as f:
        return [float(row["images_per_s"]) for row in csv.DictReader(f)]


def bench_pretrain(sizes: Sizes, device: torch.device, methods: list[str], compile_too: bool, precision: str, record: dict) -> dict:
    from contrastlab.train.pretrain import pretrain

    record["pretrain"] = signature(pretrain)
    precision = resolved_precision(precision, device, "pretrain")
    data = generated_imageset(sizes.pretrain_images, sizes.image_size)
    modes = ["eager"] + (["compiled"] if compile_too and accepts(pretrain, "compile") else [])
    out: dict = {}
    for method in methods:
        out[method] = {}
        for mode in modes:
            extra = supported(pretrain, precision=precision, compile=True if mode == "compiled" else None)
            entry: dict = {"precision": extra.get("precision", "kernel default"), "images": sizes.pretrain_images, "batch": sizes.batch, "width": sizes.width,
                           "image_size": sizes.image_size, "epochs": sizes.pretrain_epochs}
            try:
                with tempfile.TemporaryDirectory(prefix=f"gpu-bench-{method}-") as folder:
                    with Stopwatch(device) as watch:
                        pretrain(data, folder, method=method, seed=0, width=sizes.width, epochs=sizes.pretrain_epochs,
                                 batch_size=sizes.batch, device=device, **extra)
                    rates = read_rates(Path(folder) / "metrics.csv")
                entry.update(per_epoch=[round(r, 1) for r in rates], wall_seconds=round(watch.seconds, 2),
                             images_per_s=float(np.median(rates[1:] if len(rates) > 1 else rates)))
            except Exception as exc:  # noqa: BLE001 - a failed row is recorded; the others still run
                traceback.print_exc()
                entry.update(images_per_s=None, error=error_text(exc))
            out[method][mode] = entry
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rates = [e["images_per_s"] for e in out[method].values() if e.get("images_per_s")]
        out[method]["best_images_per_s"] = max(rates) if rates else None
    out["compile_available"] = accepts(pretrain, "compile")
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
    labels = torch.arange(n) % classes
    return images.to(device), labels.to(device)


def bench_inference(sizes: Sizes, device: torch.device, precision: str, record: dict) -> dict:
    from contrastlab.train.finetune import extract_features

    record["extract_features"] = signature(extract_features)
    extra = supported(extract_features, precision=resolved_precision(precision, device, "finetune"))
    encoder = task_model(sizes, device)[0]
    images = np.random.default_rng(0).integers(0, 256, (sizes.inference_images, sizes.image_size, sizes.image_size, 3), dtype=np.uint8)
    timing = measure(lambda: extract_features(encoder=encoder, images=images, device=device, **extra), device=device, repeats=3, warmup=1)
    return {"precision": extra.get("precision", "kernel default"), "images": sizes.inference_images, "seconds": timing.median, "images_per_s": sizes.inference_images / timing.median,
            "note": "extract_features: uint8 host images -> device, eval, inference_mode, features back to host"}


def bench_landscape(sizes: Sizes, device: torch.device, precision: str, record: dict) -> dict:
    from contrastlab.analysis.directions import random_directions
    from contrastlab.analysis.landscape import loss_surface

    record["loss_surface"] = signature(loss_surface)
    record["random_directions"] = signature(random_directions)
    model = task_model(sizes, device)
    images, labels = task_data(sizes.landscape_images, sizes, device)
    directions = random_directions(model=model, n=2, seed=0)
    axis = np.linspace(-1.0, 1.0, sizes.landscape_grid)
    extra = supported(loss_surface, precision=resolved_precision(precision, device, "landscape"))
    loss_surface(model=model, images=images, labels=labels, directions=directions, xs=axis[:1], ys=axis[:1], **extra)  # warm-up
    with Stopwatch(device) as watch:
        loss_surface(model=model, images=images, labels=labels, directions=directions, xs=axis, ys=axis, **extra)
    points = sizes.landscape_grid ** 2
    return {"grid": sizes.landscape_grid, "images": sizes.landscape_images, "seconds": watch.seconds,
            "points_per_s": points / watch.seconds,
            # linear in points and images: equal to "seconds" at the paper's sizes
            "seconds_at_51x51": watch.seconds * (51 ** 2 / points) * (PAPER["landscape_images"] / sizes.landscape_images),
            "precision": extra.get("precision", "kernel default")}


def bench_hvp(sizes: Sizes, device: torch.device, precision: str, record: dict) -> dict:
    from contrastlab.analysis.sharpness import hessian_operator

    record["hessian_operator"] = signature(hessian_operator)
    extra = supported(hessian_operator, precision=resolved_precision(precision, device, "sharpness"))
    model = task_model(sizes, device)
    images, labels = task_data(sizes.hvp_samples, sizes, device)
    with hessian_operator(model=model, images=images, labels=labels, **extra) as (matvec, dim):
        vector = torch.randn(dim, generator=torch.Generator().manual_seed(0)).to(device)
        timing = measure(lambda: matvec(vector), device=device, repeats=sizes.hvp_products, warmup=1)
    return {"precision": extra.get("precision", "kernel default"), "samples": sizes.hvp_samples, "products": sizes.hvp_products, "parameters": dim,
            "seconds_per_product": timing.median,
            "seconds_per_product_at_paper": timing.median * PAPER["sharpness_samples"] / sizes.hvp_samples}


def bench_attacks(sizes: Sizes, device: torch.device, precision: str, record: dict) -> dict:
    from contrastlab.analysis import attacks as attacks_module
    from contrastlab.analysis.attacks import robust_accuracy

    record["robust_accuracy"] = signature(robust_accuracy)
    precision = resolved_precision(precision, device, "robustness")
    model = task_model(sizes, device)
    images, labels = task_data(sizes.attack_images, sizes, device)
    out = {}
    for attack, extra in (("fgsm", {}), ("pgd", {"steps": sizes.pgd_steps, "seed": 0})):
        kernel = getattr(attacks_module, attack, None)  # robust_accuracy passes its extra keywords on to it
        # precision= to robust_accuracy itself, else (older signature) to the attack through its **attack_kwargs
        own = supported(robust_accuracy, precision=precision)
        extra = {**extra, **(own or (supported(kernel, precision=precision) if kernel is not None else {}))}
        record[attack] = signature(kernel) if kernel is not None else None
        robust_accuracy(model=model, images=images[:64], labels=labels[:64], eps_values=[1 / 255], attack=attack, **extra)  # warm-up
        with Stopwatch(device) as watch:
            robust_accuracy(model=model, images=images, labels=labels, eps_values=list(sizes.attack_eps), attack=attack, **extra)
        per_eps = watch.seconds / len(sizes.attack_eps)
        scale = PAPER["attack_images"] / sizes.attack_images * ((PAPER["pgd_steps"] + 1) / (sizes.pgd_steps + 1) if attack == "pgd" else 1)
        out[attack] = {"precision": extra.get("precision", "kernel default"), "seconds_per_eps_at_paper": per_eps * scale, "images": sizes.attack_images, "eps_timed": len(sizes.attack_eps), "seconds_per_eps": watch.seconds / len(sizes.attack_eps),
                       **({"steps": sizes.pgd_steps} if attack == "pgd" else {})}
    return out


def guarded(name: str, fn, errors: dict):
    started = time.perf_counter()
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one broken kernel must not lose the other figures
        traceback.print_exc()
        errors[name] = error_text(exc)
        return None
    finally:
        print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


# ---- (c) projection ---------------------------------------------------------------------------------

def projection(throughput: dict) -> dict:
    """Hours of the full paper grid on this one GPU, stage by stage, from the measured throughputs."""
    p = PAPER
    runs = p["methods"] * p["seeds"] * p["tasks"]  # analysed (method, seed, task) probes: 48
    probes = (p["methods"] + 1) * p["seeds"] * p["tasks"]  # random init included: 64
    hvps = p["lanczos_steps"] + p["trace_samples"]
    stages: dict[str, dict] = {}

    pre = throughput.get("pretrain") or {}
    rates = {m: (pre.get(m) or {}).get("best_images_per_s") for m in METHODS}
    if all(rates.values()):
        seconds = sum(p["seeds"] * p["epochs"] * p["pretrain_images"] / r for r in rates.values())
        terms = " + ".join(f"{p['seeds']}×{p['epochs']}×{p['pretrain_images']:,}/{r:,.0f}" for r in rates.values())
        stages["pretraining"] = {"seconds": seconds, "formula": f"Σ_method seeds×epochs×images / (images/s) = {terms}"}
    inference = (throughput.get("inference") or {}).get("images_per_s")
    if inference:
        images = p["task_train"] + p["task_val"]
        stages["probes"] = {"seconds": probes * images / inference,
                            "formula": f"{probes} probes × ({p['task_train']:,} + {p['task_val']}) images / {inference:,.0f} images/s "
                                       "(feature extraction; probe epochs on cached features not counted)"}
    landscape = throughput.get("landscape") or {}
    if landscape.get("seconds_at_51x51"):
        stages["landscapes"] = {"seconds": runs * landscape["seconds_at_51x51"],
                                "formula": f"{runs} runs × {landscape['seconds_at_51x51']:.2f} s per 51×51 landscape on {p['landscape_images']:,} images"}
    hvp = (throughput.get("hvp") or {}).get("seconds_per_product_at_paper")
    if hvp:
        stages["sharpness"] = {"seconds": runs * hvps * hvp,
                               "formula": f"{runs} runs × ({p['lanczos_steps']} Lanczos + {p['trace_samples']} Hutch++) HVPs × {hvp:.4f} s/HVP on {p['sharpness_samples']} images"}
    attacks = throughput.get("attacks") or {}
    if attacks.get("fgsm") and attacks.get("pgd"):
        fgsm, pgd = attacks["fgsm"]["seconds_per_eps_at_paper"], attacks["pgd"]["seconds_per_eps_at_paper"]
        stages["attacks"] = {"seconds": runs * p["eps"] * (fgsm + pgd),
                             "formula": f"{runs} runs × {p['eps']} ε × ({fgsm:.3f} s FGSM + {pgd:.3f} s PGD-{p['pgd_steps']}) per ε on {p['attack_images']:,} images (ε=0 counted as attacked)"}
    stages["geometry"] = {"seconds": 0.0, "formula": "negligible (InPCA and t_w of 4 tasks: seconds on the CPU)"}
    for stage in stages.values():
        stage["hours"] = stage["seconds"] / 3600
    expected = {"pretraining", "probes", "landscapes", "sharpness", "attacks", "geometry"}
    missing = sorted(expected - stages.keys())
    total = None if missing else sum(s["hours"] for s in stages.values())
    return {"stages": stages, "missing": missing, "total_hours": total,
            "formula": "total = pretraining + probes + landscapes + sharpness + attacks + geometry, run back to back on one GPU",
            "note": "landscape, HVP and attack times measured below the paper's sizes are scaled linearly to them "
                    "(points × images; images; images × PGD forward-backward passes): only --cpu-smoke or --landscape-grid do that",
            "grid": dict(PAPER)}


def check_targets(throughput: dict, projected: dict, study: dict | None) -> dict:
    pre = throughput.get("pretrain") or {}
    values = {
        "simclr_images_per_s": (pre.get("simclr") or {}).get("best_images_per_s"),
        "supce_images_per_s": (pre.get("supce") or {}).get("best_images_per_s"),
        "landscape_51_seconds": (throughput.get("landscape") or {}).get("seconds_at_51x51"),
        "full_grid_hours": projected.get("total_hours"),
        "micro_study_all_cuda": None if study is None else study.get("all_cuda"),
    }
    out = {}
    for name, (op, threshold, unit) in TARGETS.items():
        value = values[name]
        met = None if value is None else {">=": value >= threshold, "<=": value <= threshold, "==": value == threshold}[op]
        out[name] = {"value": value, "target": f"{op} {threshold}", "unit": unit, "met": met}
    return out


# ---- output -----------------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    env, lines = results["environment"], []
    smoke = " — CPU smoke run at tiny sizes: a check of the script, not a measurement" if results["mode"] == "cpu-smoke" else ""
    lines += [f"# contrastlab on one GPU{smoke}", "",
              f"{env.get('device_name')}; torch {env.get('torch')}; CUDA {env.get('cuda')}; {env.get('utc')}", ""]
    rows = []
    for name, target in results["targets"].items():
        met = {True: "yes", False: "**no**", None: "—"}[target["met"]]
        value = target["value"]
        rows.append([name, str(value) if isinstance(value, bool) else fmt(value), target["unit"], target["target"], met])
    lines += ["## Targets", "", markdown_table(["target", "value", "unit", "required", "met"], rows, "lrllr"), ""]

    study = results.get("micro_study")
    if study:
        lines += ["## (a) Micro paper study through the CLI", "", f"`{study['command']}`", "",
                  f"Data: {study['data']}. Return code {study.get('returncode')}, wall {fmt(study['wall_seconds'])} s "
                  f"(report + start-up {fmt(study['report_and_overhead_seconds'])} s), {study['units']} units.", ""]
        rows = [[k, study["stage_units"][k], fmt(v)] for k, v in study["stage_seconds"].items()]
        lines += [markdown_table(["stage (kind)", "units", "seconds"], rows, "lrr"), "",
                  f"done.json devices: {study['devices']}; precisions: {study['precisions']}; all cuda: {study['all_cuda']}", ""]
        if study.get("error"):
            lines += ["Error (tail):", "", "```", study["error"][-1200:], "```", ""]

    t = results.get("throughput") or {}
    rows = []
    for method in METHODS:
        for mode, entry in ((t.get("pretrain") or {}).get(method) or {}).items():
            if isinstance(entry, dict):
                setting = f"{mode}, {entry['precision']}, {entry['images']:,} images × {entry['epochs']} epochs, batch {entry['batch']}, width {entry['width']}, {entry['image_size']}px"
                rows.append([f"pretrain {method}", setting, fmt(entry.get("images_per_s")), "images/s", entry.get("error", "")])
    if t.get("inference"):
        rows.append(["encoder inference", f"{t['inference']['images']:,} images, extract_features, {t['inference']['precision']}", fmt(t["inference"]["images_per_s"]), "images/s", ""])
    if t.get("landscape"):
        ls = t["landscape"]
        rows.append(["landscape", f"{ls['grid']}×{ls['grid']} on {ls['images']:,} images, {ls['precision']}", fmt(ls["seconds"]), "s", f"{fmt(ls['points_per_s'])} points/s"])
    if t.get("hvp"):
        rows.append(["Hessian-vector product", f"{t['hvp']['samples']} images, {t['hvp']['parameters']:,} parameters, {t['hvp']['precision']}", fmt(t["hvp"]["seconds_per_product"]), "s/HVP", ""])
    for attack, entry in (t.get("attacks") or {}).items():
        steps = f", {entry['steps']} steps" if "steps" in entry else ""
        rows.append([attack.upper(), f"{entry['images']:,} images{steps}, {entry['precision']}", fmt(entry["seconds_per_eps"]), "s/ε", ""])
    for name, error in (results.get("errors") or {}).items():
        rows.append([name, "", "—", "", f"failed: {error}"])
    lines += ["## (b) Throughput at paper sizes", "", markdown_table(["measurement", "setting", "value", "unit", "note"], rows, "llrll"), ""]

    proj = results["projection"]
    rows = [[stage, fmt(s["hours"]), s["formula"]] for stage, s in proj["stages"].items()]
    rows.append(["**full paper grid**", fmt(proj["total_hours"]), proj["formula"] + (f"; missing: {', '.join(proj['missing'])}" if proj["missing"] else "")])
    lines += ["## (c) Projected wall time of the full paper grid on this GPU", "", markdown_table(["stage", "hours", "formula"], rows, "lrl"), "",
              proj["note"] + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu.json and gpu.md (default: benchmarks/results; "
                        "with --cpu-smoke a new temporary folder unless given)")
    parser.add_argument("--cpu-smoke", action="store_true", help="everything at tiny sizes on the CPU (checks the script)")
    parser.add_argument("--parts", nargs="+", choices=["study", "throughput"], default=["study", "throughput"])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--skip-compile", action="store_true", help="no compiled pretraining rows")
    parser.add_argument("--data-root", type=Path, default=None, help="where CIFAR may be (default: $CONTRASTLAB_DATA or ~/.cache/contrastlab)")
    parser.add_argument("--landscape-grid", type=int, default=None, help="points per axis of the timed landscape (default 51)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="precision= given to each kernel that takes one; auto: what the study resolves per stage "
                             "(bf16 pretraining on CUDA, fp32 elsewhere)")
    parser.add_argument("--keep", action="store_true", help="keep the micro study's run directory and data")
    args = parser.parse_args(argv)

    if args.cpu_smoke:
        device, sizes = torch.device("cpu"), Sizes(**asdict(SMOKE))
        torch.set_num_threads(1)  # a check, not a measurement
        out = args.out or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    else:
        if not torch.cuda.is_available():
            print("benchmarks/gpu.py needs an NVIDIA GPU (torch.cuda.is_available() is False); "
                  "use --cpu-smoke to check the script on a CPU", file=sys.stderr)
            return 2
        device, sizes = torch.device("cuda", 0), Sizes()
        out = args.out or RESULTS
    if args.landscape_grid is not None:
        sizes.landscape_grid = args.landscape_grid
    data_root = args.data_root or Path(os.environ.get("CONTRASTLAB_DATA") or Path.home() / ".cache" / "contrastlab")

    results: dict = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "environment": environment(device),
                     "sizes": asdict(sizes), "micro_study": None, "throughput": {}, "errors": {}, "kernels": {}}
    print(f"{results['environment']['device_name']}; torch {torch.__version__}; CUDA {torch.version.cuda}", file=sys.stderr)

    def save() -> tuple[Path, Path, str]:
        """Write gpu.json and gpu.md with what is measured so far (a run cut by a time limit keeps them)."""
        results["projection"] = projection(results["throughput"])
        results["targets"] = check_targets(results["throughput"], results["projection"], results["micro_study"])
        text = markdown(results)
        return (*write_results(Path(out) / "gpu.json", results, text, command=command_line()), text)

    if "study" in args.parts:
        with temporary_directory("gpu-study-", keep=args.keep) as work:
            results["micro_study"] = guarded("micro study", lambda: micro_study(sizes, data_root, work), results["errors"])
            if args.keep and results["micro_study"]:
                results["micro_study"]["run_dir"] = str(work / "study")
        save()

    if "throughput" in args.parts:
        t, errors, kernels = results["throughput"], results["errors"], results["kernels"]
        results["tf32"] = study_device_settings(device)
        benches = [
            ("pretrain", "pretrain", lambda: bench_pretrain(sizes, device, args.methods, not args.skip_compile, args.precision, kernels)),
            ("inference", "encoder inference", lambda: bench_inference(sizes, device, args.precision, kernels)),
            ("landscape", "landscape", lambda: bench_landscape(sizes, device, args.precision, kernels)),
            ("hvp", "Hessian-vector product", lambda: bench_hvp(sizes, device, args.precision, kernels)),
            ("attacks", "attacks", lambda: bench_attacks(sizes, device, args.precision, kernels)),
        ]
        for key, name, bench in benches:
            t[key] = guarded(name, bench, errors)
            save()
        synchronize(device)

    json_path, md_path, text = save()
    try:
        print(text, flush=True)
    except BrokenPipeError:  # e.g. piped into head
        pass
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
