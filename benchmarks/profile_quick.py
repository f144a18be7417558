"""Where the quick preset's pretraining spends its time (2 CPU cores).

    .venv/bin/python benchmarks/profile_quick.py                  # all three methods, 2 epochs each
    .venv/bin/python benchmarks/profile_quick.py --methods simclr --epochs 1 --compile

The quick preset: synth10 at 16×16, 400 images per class (4,000), CIFAR ResNet-18 width 8,
batch 256, the per-method lr and temperature of src/contrastlab/presets/quick.yaml. Reports

1. process start-up: ``python -c pass`` and ``import contrastlab.train.pretrain`` (torch
   included), and drawing the synth10 set;
2. per method, wall-clock shares of the step's phases — augmentation, forward, loss,
   backward, optimizer (zero_grad + step) — timed with ``perf_counter`` around each phase of
   a loop that mirrors :func:`contrastlab.train.pretrain` (on a CPU every op is synchronous);
3. per method, torch.profiler's self CPU time by kind of operator (convolution forward and
   backward, BatchNorm forward and backward, elementwise/activation, matmul, augmentation
   ops, optimizer ops, other) and the remainder of the wall clock that no operator accounts
   for (Python and dispatcher overhead);
4. the wall clock of :func:`pretrain` itself over the same epochs, for comparison.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from contrastlab.augment import make_views
from contrastlab.config import PretrainConfig
from contrastlab.data import load_dataset
from contrastlab.models import build_encoder
from contrastlab.train.methods import get_method
from contrastlab.train.pretrain import batches
from pretrain_call import method_head, method_loss, pretrain

LR = {"simclr": 0.3, "supcon": 0.3, "supce": 0.2}
TEMPERATURE = {"simclr": 0.2, "supcon": 0.5, "supce": 0.07}
PHASES = ("augment", "forward", "loss", "backward", "optimizer")

# operator name (substring, lower case) -> kind; the first match wins
KINDS = [
    ("convolution_backward", "conv bwd"), ("convolution", "conv fwd"), ("conv2d", "conv fwd"),
    ("batch_norm_backward", "BatchNorm bwd"), ("batch_norm", "BatchNorm fwd"),
    ("grid_sampler", "augment"), ("grid_sample", "augment"), ("argsort", "augment"), ("nonzero", "augment"),
    ("index_put", "augment"), ("lerp", "augment"), ("floor", "augment"), ("sign", "augment"),
    ("_foreach", "optimizer"), ("sgd", "optimizer"),
    ("mm", "matmul/linear"), ("addmm", "matmul/linear"), ("linear", "matmul/linear"),
    ("logsumexp", "loss"), ("log_softmax", "loss"), ("nll_loss", "loss"), ("normalize", "loss"),
    ("threshold_backward", "relu/add (elementwise)"), ("relu", "relu/add (elementwise)"), ("add", "relu/add (elementwise)"),
    ("mean", "pool/reduce"), ("sum", "pool/reduce"),
]


def kind_of(name: str) -> str:
    lowered = name.lower()
    for pattern, kind in KINDS:
        if pattern in lowered:
            return kind
    return "other ops"


def startup_seconds() -> dict[str, float]:
    def run(code: str) -> float:
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            best = min(best, time.perf_counter() - started)
        return best

    bare = run("pass")
    return {"python -c pass": bare, "import contrastlab.train.pretrain (incl. torch)": run("import contrastlab.train.pretrain")}


CHANNELS_LAST = True  # as pretrain() does; --contiguous for the NCHW comparison


def build(data, method: str, width: int):
    recipe = get_method(method)
    torch.manual_seed(0)
    net = build_encoder("resnet18", width=width, mean=data.mean, std=data.std, in_channels=data.images.shape[-1])
    head = method_head(method, net.feature_dim, data.num_classes)
    model = nn.Sequential(net, head).train()
    if CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR[method], momentum=0.9, weight_decay=1e-4)
    return recipe, model, optimizer


def mirror_loop(data, method: str, width: int, batch_size: int, epochs: int, prof=None) -> tuple[dict[str, float], float]:
    """The loop of pretrain(), phase by phase; returns seconds per phase and the total."""
    recipe, model, optimizer = build(data, method, width)
    views = recipe.n_views(PretrainConfig())
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(data.labels)
    generator = torch.Generator().manual_seed(0)
    phases: dict[str, float] = defaultdict(float)
    started_all = time.perf_counter()
    for _ in range(epochs):
        for batch in batches(torch.randperm(len(labels), generator=generator), batch_size):
            t0 = time.perf_counter()
            with record_function("phase:augment"):
                x = make_views(images[batch], recipe.augmentation, views, generator, size=images.shape[-1])
                y = labels[batch]
            t1 = time.perf_counter()
            with record_function("phase:forward"):
                outputs = model(x.flatten(0, 1))
            t2 = time.perf_counter()
            with record_function("phase:loss"):
                loss = method_loss(method, outputs, x, y, TEMPERATURE[method])
            t3 = time.perf_counter()
            with record_function("phase:backward"):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            t4 = time.perf_counter()
            with record_function("phase:optimizer"):
                optimizer.step()
            t5 = time.perf_counter()
            for name, a, b in zip(PHASES, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
                phases[name] += b - a
            if prof is not None:
                prof.step()
    return dict(phases), time.perf_counter() - started_all


def operator_breakdown(data, method: str, width: int, batch_size: int) -> tuple[dict[str, float], float, list[tuple[str, float]]]:
    """Self CPU seconds per kind of operator over one epoch, the epoch's wall clock, and the
    largest operators of kind "other ops"."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _, wall = mirror_loop(data, method, width, batch_size, 1)
    kinds: dict[str, float] = defaultdict(float)
    others = []
    for event in prof.key_averages():
        if event.key.startswith(("phase:", "ProfilerStep", "Optimizer.")):
            continue  # regions, not operators (their operators are counted themselves)
        kinds[kind_of(event.key)] += event.self_cpu_time_total / 1e6
        if kind_of(event.key) == "other ops":
            others.append((event.key, event.self_cpu_time_total / 1e6))
    return dict(kinds), wall, sorted(others, key=lambda kv: -kv[1])[:4]


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["simclr", "supcon", "supce"])
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=400)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--compile", action="store_true", help="pretrain(compile=True) for the pretrain() wall-clock row")
    parser.add_argument("--contiguous", action="store_true", help="mirror loop in NCHW (pretrain() before channels_last on CPU)")
    args = parser.parse_args()
    global CHANNELS_LAST
    CHANNELS_LAST = not args.contiguous

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, synth10 {args.size}x{args.size} "
          f"{args.per_class}/class, resnet18 width {args.width}, batch {args.batch}, "
          f"{'NCHW' if args.contiguous else 'channels_last'}\n")
    for name, seconds in startup_seconds().items():
        print(f"start-up  {name:50s} {seconds:6.2f} s")
    started = time.perf_counter()
    data = load_dataset("synth10", "train", image_size=args.size, per_class=args.per_class, seed=0)
    print(f"data      {'synth10 generation (' + str(len(data.labels)) + ' images)':50s} {time.perf_counter() - started:6.2f} s\n")

    for method in args.methods:
        mirror_loop(data, method, args.width, args.batch, 1)  # warm-up (allocator, oneDNN primitives)
        phases, wall = mirror_loop(data, method, args.width, args.batch, args.epochs)
        print(f"## {method}: {args.epochs} epochs of the mirrored loop, {wall:.2f} s wall "
              f"({args.epochs * len(data.labels) / wall:.0f} images/s)")
        for name in PHASES:
            print(f"   phase {name:10s} {phases[name]:6.2f} s  {percent(phases[name], wall)}")
        rest = wall - sum(phases.values())
        print(f"   phase {'loop/other':10s} {rest:6.2f} s  {percent(rest, wall)}")
        kinds, wall1, others = operator_breakdown(data, method, args.width, args.batch)
        print(f"   operators over 1 profiled epoch ({wall1:.2f} s wall under the profiler):")
        for kind, seconds in sorted(kinds.items(), key=lambda kv: -kv[1]):
            print(f"     {kind:24s} {seconds:6.2f} s  {percent(seconds, wall1)}")
        print("       largest other ops: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in others))
        overhead = wall1 - sum(kinds.values())
        print(f"     {'Python/dispatch (rest)':24s} {overhead:6.2f} s  {percent(overhead, wall1)}")
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            pretrain(data, out, method=method, width=args.width, epochs=args.epochs, batch_size=args.batch,
                     lr=LR[method], temperature=TEMPERATURE[method], compile=args.compile)
            print(f"   pretrain() itself, {args.epochs} epochs incl. set-up and checkpoints: {time.perf_counter() - started:.2f} s\n", flush=True)


if __name__ == "__main__":
    main()
