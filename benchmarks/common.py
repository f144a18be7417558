"""Helpers shared by the benchmark scripts: timing, the machine's description, result files,
and CIFAR-format data folders.

Scripts import it as ``from common import ...`` (they run as ``python benchmarks/<name>.py``,
which puts this folder first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pickle
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# ---- timing ------------------------------------------------------------------------------------


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds of each timed call, after the warm-up calls."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)


def measure(fn: Callable[[], object], *, device: torch.device | str | None = None, repeats: int = 3, warmup: int = 1) -> Timing:
    """Time ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, synchronizing ``device``
    around each call so that queued GPU work is counted."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return Timing(seconds)


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """(best seconds over ``repeats`` calls, the last call's result): for CPU code on a shared machine."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


class Stopwatch:
    """``with stopwatch(device) as watch: ...`` then ``watch.seconds`` (device synchronized at both ends)."""

    def __init__(self, device: torch.device | str | None = None):
        self.device, self.seconds = device, float("nan")

    def __enter__(self) -> "Stopwatch":
        synchronize(self.device)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._started


stopwatch = Stopwatch


# ---- command line and machine --------------------------------------------------------------------


def add_device_arguments(parser: argparse.ArgumentParser, device: str = "cpu") -> None:
    """The ``--threads`` and ``--device`` options most scripts share."""
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--device", default=device)


def setup_device(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads``; the ``--device`` as a torch.device."""
    if getattr(args, "threads", None) is not None:
        torch.set_num_threads(args.threads)
    return torch.device(args.device)


def device_line(device: torch.device | str) -> str:
    """One line for a table header: device, torch version, threads, load average."""
    return (f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
            f"load average {os.getloadavg()[0]:.1f}")


def command_line(argv: list[str] | None = None) -> str:
    """The command that is running, as one could type it again (``python`` for the interpreter)."""
    argv = sys.argv if argv is None else argv
    script = argv[0]
    with contextlib.suppress(ValueError):
        script = os.path.relpath(script)
    return shlex.join(["python", script, *argv[1:]])


def environment(device: torch.device | str) -> dict:
    """What the figures were measured on: device name, versions, host, time."""
    device = torch.device(device)
    info = {
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with contextlib.suppress(ImportError):
        import contrastlab

        info["contrastlab"] = getattr(contrastlab, "__version__", None)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(device_name=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", driver_gpus=torch.cuda.device_count())
    return info


def _json_ready(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(json_path: Path, results: dict, markdown: str, *, command: str | None = None,
                  markdown_path: Path | None = None) -> tuple[Path, Path]:
    """Write ``results`` (plus the command) as JSON and ``markdown`` (headed by the command) next to
    it (``<stem>.md`` unless ``markdown_path``); return both paths."""
    json_path = Path(json_path)
    markdown_path = Path(markdown_path) if markdown_path is not None else json_path.with_suffix(".md")
    command = command if command is not None else command_line()
    json_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, **results}
    json_path.write_text(json.dumps(_json_ready(payload), indent=2, allow_nan=False) + "\n")
    markdown_path.write_text(f"Produced by `{command}`\n\n{markdown.rstrip()}\n")
    return json_path, markdown_path


def markdown_table(header: list[str], rows: list[list[object]], align: str | None = None) -> str:
    """A Markdown table; ``align`` one character per column, 'l' or 'r' (default: all left)."""
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table: thousands separators for large values, significant digits otherwise."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


# ---- CIFAR-format folders -----------------------------------------------------------------------

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"


def _class_balanced(rng: np.random.Generator, classes: int, per_class: int) -> tuple[np.ndarray, list[int]]:
    labels = np.repeat(np.arange(classes), per_class)
    rng.shuffle(labels)
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    return data, [int(v) for v in labels]


def _dump(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar_folders(root: str | Path, *, cifar10_train_per_class: int = 100, cifar10_test_per_class: int = 10,
                        cifar100_train_per_class: int = 20, cifar100_test_per_class: int = 5, seed: int = 0) -> Path:
    """Random images in the extracted layout of the official python-version archives, under ``root``:
    ``cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta) and ``cifar-100-python/``
    (train, test, meta): pickled dicts with b"data" uint8 (N, 3072) and b"labels" / b"fine_labels".

    contrastlab reads an extracted folder with structural checks instead of the archive's MD5, so
    these folders load like the real data. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    data, labels = _class_balanced(rng, 10, cifar10_train_per_class)
    for i, (part, part_labels) in enumerate(zip(np.array_split(data, 5), np.array_split(np.asarray(labels), 5)), start=1):
        _dump(folder / f"data_batch_{i}", {b"batch_label": f"training batch {i} of 5".encode(), b"data": part,
                                            b"labels": [int(v) for v in part_labels]})
    data, labels = _class_balanced(rng, 10, cifar10_test_per_class)
    _dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"data": data, b"labels": labels})
    _dump(folder / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072})

    folder = root / CIFAR100_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", cifar100_train_per_class), ("test", cifar100_test_per_class)):
        data, fine = _class_balanced(rng, 100, per_class)
        _dump(folder / split, {b"data": data, b"fine_labels": fine, b"coarse_labels": [v // 5 for v in fine]})
    _dump(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return root


def cifar_present(root: str | Path) -> bool:
    """Whether ``root`` holds CIFAR-10 and CIFAR-100 as official archives or extracted folders."""
    root = Path(root)
    return all((root / archive).is_file() or (root / folder).is_dir() for archive, folder in
               (("cifar-10-python.tar.gz", CIFAR10_FOLDER), ("cifar-100-python.tar.gz", CIFAR100_FOLDER)))


@contextlib.contextmanager
def temporary_directory(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A fresh folder, removed afterwards unless ``keep``."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)
