"""The filter-normalized Hessian trace from the raw trace's products, against products of its own.

    .venv/bin/python -m contrastlab study --preset quick        # once: trained quick models in runs/quick
    .venv/bin/python benchmarks/shared_trace.py                  # writes benchmarks/results/shared_trace.md

``hessian_sharpness`` with both normalizations estimates tr(S H S) = tr(diag(S²) H) from the raw
Hessian's Hutch++ products and probes (``stochastic_traces``) instead of running Hutch++ on S H S
with products of its own. Both are unbiased; this measures, on trained models of a quick run
(their sharpness units' classifiers and samples, one thread):

- error: over ``--seeds`` seeds, the root-mean-square error of each way's estimate (the quick
  preset's ``trace_samples`` products) against a reference, Hutch++ on S H S with
  ``--reference-samples`` products (its own standard error is printed next to it);
- time: ``hessian_sharpness`` as the sharpness stage calls it (raw and filter-normalized, Lanczos
  and trace) against the same work with a trace of its own per normalization, alternating,
  ``--repeats`` times each, in this process.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from common import command_line, environment, fmt, markdown_table, write_results
from contrastlab.analysis.hessian import HessianOperator
from contrastlab.analysis.sharpness import SharpnessSettings, hessian_sharpness, lanczos_top_eigenvalues, stochastic_trace, stochastic_traces
from contrastlab.config_checks import load_config
from contrastlab.study.inputs import analysis_split, load_classifier
from contrastlab.train.finetune import to_tensor

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("simclr/seed0/task-0-1-2-3-4", "supce/seed0/task-56-58-62-66-68", "supcon/seed0/task-95-96-97-98-99")


def classifier_and_samples(run: Path, unit: str, config) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The classifier and samples a sharpness unit of ``run`` analyses ("method/seedN/task-...")."""
    method, seed, task = unit.split("/")
    model, meta = load_classifier(run / "pretrain" / method / seed / "encoder.safetensors",
                                  run / "finetune" / method / seed / task / "probe.safetensors", torch.device("cpu"))
    images, labels = analysis_split(config.data, list(meta["task_classes"]), config.finetune.analysis_split,
                                    config.analysis.sharpness.samples)
    return model, to_tensor(images), torch.from_numpy(labels)


def separate_traces(model, images, labels, settings) -> dict:
    """What hessian_sharpness computed before the traces shared products: Lanczos and Hutch++ per normalization."""
    with HessianOperator(model, images, labels) as hessian:
        return {norm: (lanczos_top_eigenvalues(view, settings.top_k, settings.iters, settings.seed, tol=settings.tol),
                       stochastic_trace(view, settings.trace_samples, settings.seed))
                for norm, view in (("none", hessian.view("none")), ("filter", hessian.filter_normalized()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/quick"), help="a finished quick study")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="sharpness units as method/seedN/task-...")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--reference-samples", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="shared_trace")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(str(args.run / "config.yaml"))
    settings = config.analysis.sharpness
    samples = settings.trace_samples

    rows, results = [], {}
    for unit in args.models:
        model, images, labels = classifier_and_samples(args.run, unit, config)
        with HessianOperator(model, images, labels) as hessian:
            filtered = hessian.filter_normalized()
            reference = stochastic_trace(filtered, args.reference_samples, seed=10_000)
            weights = hessian.filter_weights()
            own = np.array([stochastic_trace(filtered, samples, seed).value for seed in range(args.seeds)])
            shared = np.array([stochastic_traces(hessian, samples, seed, weights=(weights,))[0].value for seed in range(args.seeds)])
        times: dict[str, list[float]] = {"separate": [], "shared": []}
        for _ in range(args.repeats):
            for way in ("separate", "shared"):
                started = time.perf_counter()
                if way == "shared":
                    hessian_sharpness(model, (images, labels), SharpnessSettings(k=settings.top_k, iters=settings.iters, tol=settings.tol,
                                                                                 trace_samples=samples, seed=settings.seed))
                else:
                    separate_traces(model, images, labels, settings)
                times[way].append(time.perf_counter() - started)
        rmse = {way: float(np.sqrt(((values - reference.value) ** 2).mean())) for way, values in (("own", own), ("shared", shared))}
        median = {way: statistics.median(values) for way, values in times.items()}
        results[unit] = {"reference": reference._asdict(), "own": own.tolist(), "shared": shared.tolist(), "rmse": rmse,
                         "seconds": times, "median_seconds": median}
        rows.append([unit, f"{fmt(reference.value)} ± {fmt(reference.std_error)}", fmt(rmse["own"]), fmt(rmse["shared"]),
                     f"{median['separate']:.2f}", f"{median['shared']:.2f}", f"{median['shared'] / median['separate']:.2f}"])
        print(" | ".join(map(str, rows[-1])), flush=True)

    env = environment("cpu")
    lines = [f"Trained models of `{args.run}` ({config.name} preset: {settings.samples} samples, {samples} trace products, "
             f"Lanczos ≤ {settings.iters} steps at tol {settings.tol}), 1 thread, torch {env['torch']}, {env['utc']}. "
             f"RMSE over seeds 0–{args.seeds - 1} against Hutch++ on S H S with {args.reference_samples} products; "
             f"time: median of {args.repeats} alternating calls (raw and filter-normalized, top eigenvalue and trace).", ""]
    lines.append(markdown_table(
        ["unit", "tr(S H S), reference", "RMSE, own products", "RMSE, raw's products", "s, separate traces", "s, shared", "ratio"],
        rows, "lrrrrrr"))
    paths = write_results(RESULTS / f"{args.name}.json", {"units": results, "trace_samples": samples, "seeds": args.seeds,
                                                          "reference_samples": args.reference_samples, "environment": env},
                          "\n".join(lines), command=command_line())
    print("\n".join(lines))
    print(f"written: {', '.join(map(str, paths))}")


if __name__ == "__main__":
    main()
