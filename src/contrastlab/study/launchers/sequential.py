"""The sequential backend: one unit at a time in this process (torchrun's ranks run it too)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ...config import StudyConfig
from ..plan import Unit
from .loop import Backend, Outcome, UnitRunner, exception_failure


class InProcess(Backend):
    """Runs each unit in ``start``, in this process; ``wait`` hands over its outcome."""

    def __init__(self, call: Callable[[Unit], float], display: bool = True):
        self.call = call
        self.display = display
        self.outcome: Outcome | None = None

    def in_flight(self) -> int:
        return 0 if self.outcome is None else 1

    def start(self, unit: Unit, after: list[str]) -> None:
        try:
            self.outcome = (unit, self.call(unit), None)
        except Exception as exc:  # KeyboardInterrupt goes through: the loop stops at once
            self.outcome = (unit, None, exception_failure(exc))

    def wait(self) -> list[Outcome]:
        outcome, self.outcome = self.outcome, None
        return [outcome] if outcome is not None else []


def sequential_backend(config: StudyConfig, run_dir: Path, runner: UnitRunner, progress: bool) -> InProcess:
    """``runner`` on each unit in turn, with the study's progress display when ``progress``."""
    return InProcess(lambda unit: runner(unit, config, run_dir, **({"progress": True} if progress else {})))
