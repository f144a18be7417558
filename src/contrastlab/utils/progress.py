"""Progress bars for long loops, off by default so library code stays quiet.

Library functions take ``progress: bool = False`` and wrap their loop in
:func:`progress_bar`; the CLI and the study runner turn it on. Inside
:func:`live_display` (the study's whole-run display) the bars of the stages become
rows of that one display, since a terminal holds one live display at a time.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_active: Progress | None = None


def _new_progress(transient: bool) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    return Progress(*columns, console=Console(file=sys.stderr), transient=transient)


@contextlib.contextmanager
def live_display() -> Iterator[Progress]:
    """One display for a whole run; :func:`progress_bar` adds its rows to it while it lasts."""
    global _active
    with _new_progress(transient=False) as display:
        _active = display
        try:
            yield display
        finally:
            _active = None


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool = False) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1)``; draw a bar on stderr only when ``enabled``."""
    if not enabled:
        yield lambda n=1: None
        return
    if _active is not None:
        task = _active.add_task(f"  {description}", total=total)
        try:
            yield lambda n=1: _active.advance(task, n) if _active is not None else None
        finally:
            if _active is not None:
                _active.remove_task(task)
        return
    with _new_progress(transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
