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


def merge_results(json_path: Path, part: dict) -> dict:
    """The results in ``json_path`` (none: an empty dict) updated with ``part``'s top-level keys; a part's own
    dict replaces the stored one whole. Benchmarks in separate invocations thus build up one file, each
    part's figures written as soon as it finishes and kept when a later part fails or runs out of time."""
    json_path = Path(json_path)
    stored = json.loads(json_path.read_text()) if json_path.exists() else {}
    stored.pop("command", None)  # written again by write_results, with each part's command
    return {**stored, **part}


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
