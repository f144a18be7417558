"""What one training step of the quick preset's network costs per layer shape, and under which oneDNN ISA.

    .venv/bin/python benchmarks/conv_kernels.py        # → results/conv_kernels.{json,md}

Forward + backward of one 3×3 convolution (C → C channels, padding 1) and of one training-mode
BatchNorm (+ ReLU) at the four stages of a CIFAR ResNet-18 of width 8 on 16×16 images, 512 rows
(a SimCLR batch of 256 images × 2 views), channels_last, fp32, 1 thread. Each oneDNN ISA cap
(``ONEDNN_MAX_CPU_ISA``, read once when oneDNN starts) runs in its own process, the processes
alternating. GFLOP/s counts the convolution's multiply-adds as 2 FLOPs, forward and both
backward products (3× the forward).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SHAPES = [(512, 8, 16, 16), (512, 16, 8, 8), (512, 32, 4, 4), (512, 64, 2, 2)]  # (rows, C, H, W)
ISAS = ["default", "AVX512_CORE", "AVX2"]


def layer_milliseconds(repeats: int) -> dict:
    """In a worker: median ms of conv and BN(+ReLU) forward + backward per shape."""
    import torch
    import torch.nn.functional as F

    from common import measure

    torch.set_num_threads(1)
    torch.manual_seed(0)
    results = {}
    for rows, channels, height, width in SHAPES:
        x = torch.randn(rows, channels, height, width).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        upstream = torch.randn_like(x)
        weight = torch.randn(channels, channels, 3, 3).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        gamma, beta = torch.ones(channels, requires_grad=True), torch.zeros(channels, requires_grad=True)
        mean, var = torch.zeros(channels), torch.ones(channels)

        def clear_grads() -> None:
            # As after zero_grad(set_to_none=True): each call writes fresh gradients, as a step
            # does, instead of adding into the last call's (an extra pass over x's gradient).
            for tensor in (x, weight, gamma, beta):
                tensor.grad = None

        def conv() -> None:
            clear_grads()
            F.conv2d(x, weight, padding=1).backward(upstream)

        def batchnorm_relu() -> None:
            clear_grads()
            F.relu(F.batch_norm(x, mean, var, gamma, beta, True, 0.1, 1e-5)).backward(upstream)

        conv_ms = measure(conv, repeats=repeats, warmup=3).median * 1e3
        flops = 3 * 2 * rows * height * width * channels * channels * 9
        results[f"{channels}"] = {"conv_ms": conv_ms, "conv_gflops": flops / conv_ms / 1e6,
                                  "bn_relu_ms": measure(batchnorm_relu, repeats=repeats, warmup=3).median * 1e3}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per measurement (median)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all ISA caps")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(layer_milliseconds(args.repeats)))
        return

    from common import command_line, environment, fmt, markdown_table, write_results

    runs: dict[str, list[dict]] = {isa: [] for isa in ISAS}
    for _ in range(args.rounds):
        for isa in ISAS:
            env = dict(os.environ, OMP_NUM_THREADS="1")
            env.pop("ONEDNN_MAX_CPU_ISA", None)
            if isa != "default":
                env["ONEDNN_MAX_CPU_ISA"] = isa
            done = subprocess.run([sys.executable, __file__, "--worker", "--repeats", str(args.repeats)], env=env,
                                  capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
            runs[isa].append(json.loads(done.stdout.strip().splitlines()[-1]))

    def median(isa: str, channels: int, key: str) -> float:
        return statistics.median(run[f"{channels}"][key] for run in runs[isa])

    rows = []
    for _, channels, height, width in SHAPES:
        rows.append([f"{channels} ch, {height}×{width}"]
                    + [fmt(median(isa, channels, "conv_ms"), 3) for isa in ISAS]
                    + [fmt(median("default", channels, "conv_gflops"), 3), fmt(median("default", channels, "bn_relu_ms"), 3)])
    command = command_line()
    markdown = ("# Convolution and BatchNorm per layer shape of the quick preset's network\n\n"
                f"512 rows, channels_last, fp32, 1 thread; medians of {args.repeats} calls, then of {args.rounds} alternating rounds.\n\n"
                + markdown_table(["layer", "conv f+b ms (default ISA)", "capped at AVX512_CORE", "capped at AVX2",
                                  "conv GFLOP/s (default)", "BN + ReLU f+b ms (default)"], rows, "lrrrrr"))
    write_results(RESULTS / "conv_kernels.json", {"environment": environment("cpu"), "runs": runs}, markdown, command=command)


if __name__ == "__main__":
    main()
