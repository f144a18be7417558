"""The report's figures written as PNG files, in worker processes while the report goes on drawing.

Rendering (``savefig``) is most of a report's time and each figure is independent of the others,
so a figure is pickled in the parent and a worker writes it. In a study the workers are forked
from the server the local launcher started, which has matplotlib imported already; alone they are
spawned (:func:`contrastlab.utils.workers.light_worker_context`). Never plain fork: the parent may
have run torch's OpenMP code, and libgomp is not fork-safe. This module imports neither torch nor
matplotlib. With one worker the figures are written at once in the calling process.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import NoReturn

from ..errors import ContrastlabError
from ..utils.io import atomic_path
from ..utils.workers import light_worker_context

log = logging.getLogger(__name__)

DPI = 120


class FigureError(RuntimeError):
    """A figure that could not be written: names the figure and the cause."""


def write_figure(figure, path: Path) -> None:
    """Write ``figure`` (a matplotlib Figure) as the PNG ``path``, atomically."""
    # A figure with a layout engine is laid out already; "tight" would lay it out a second time.
    tight = None if figure.get_layout_engine() is not None else "tight"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, bbox_inches=tight)


def default_workers() -> int:
    """Processes rendering figures when not told: a few, never more than the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(4, cpus)


def _raise_failure(path: Path, exc: BaseException) -> NoReturn:
    """Raise the error of a figure that failed. A user-facing error (a full disk) names its file already."""
    if isinstance(exc, ContrastlabError):
        raise exc
    raise FigureError(f"figure {path.name} could not be written: {type(exc).__name__}: {exc}") from exc


def _start_worker() -> None:
    """Worker start-up: import what rendering needs before the first figure arrives."""
    # Ctrl-C reaches the whole process group; the parent handles it and shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        importlib.import_module(module)


def _started() -> None:
    """A no-op task: submitting one per worker starts every worker at once."""


def _render(data: bytes, path: Path) -> None:
    """Worker: write the pickled figure ``data`` to ``path``."""
    write_figure(pickle.loads(data), path)


class FigureWriter:
    """Writes figures with ``workers`` processes (at once, in this process, when ``workers <= 1``;
    None: :func:`default_workers`).

    Use it as a context manager: leaving it waits until every figure is on disk and raises the
    first failure as one error naming its figure."""

    def __init__(self, workers: int | None = 1):
        self.workers = max(1, int(default_workers() if workers is None else workers))
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[tuple[Path, Future]] = []

    def __enter__(self) -> FigureWriter:
        self._start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # failing already: drop the figures not started, keep the error that is on its way
            self._shutdown()

    def _start(self) -> None:
        if self.workers <= 1 or self._pool is not None:
            return
        self._pool = ProcessPoolExecutor(self.workers, mp_context=light_worker_context(), initializer=_start_worker)
        # The pool starts a worker per task submitted while none is idle: start all of them now, so
        # that their start-up overlaps the parent's reading and drawing.
        for _ in range(self.workers):
            self._pool.submit(_started)

    def submit(self, figure, path: str | Path) -> Path:
        """Have ``figure`` written as ``path``; return ``path`` (written by the time the writer closes).
        The figure is copied now: the caller may clear it as soon as this returns."""
        path = Path(path)
        self._start()
        data = None
        if self._pool is not None:
            try:
                data = pickle.dumps(figure)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:  # e.g. a lambda tick formatter
                log.debug("figure %s cannot be pickled (%s): written here", path.name, exc)
        if data is None:
            try:
                write_figure(figure, path)
            except Exception as exc:
                _raise_failure(path, exc)
        else:
            self._pending.append((path, self._pool.submit(_render, data, path)))
        return path

    def close(self) -> None:
        """Wait for every figure submitted (raising the first failure) and stop the workers."""
        try:
            for path, future in self._pending:
                exc = future.exception()
                if exc is not None:
                    _raise_failure(path, exc)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        pool, self._pool, self._pending = self._pool, None, []
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
