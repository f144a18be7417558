"""The ready-unit loop every backend runs under, and its tracker (logging, progress, failure).

A backend (:class:`Backend`) says where units run; :func:`run_ready_units` decides when each
unit starts: in plan order, once its dependencies are done (or submitted, for a backend that
holds jobs back itself), at most ``backend.limit`` at a time.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...errors import ContrastlabError
from ...utils.progress import live_display
from ..plan import Unit

log = logging.getLogger(__package__)  # one logger for the whole launcher package, as before the split

# A unit runner: runner(unit, config, run_dir) -> seconds; the sequential backend adds
# progress=True when the study shows progress. Local workers need a top-level function (pickled).
UnitRunner = Callable[..., float]

# (unit, seconds or None, failure): failure is None or (message, cause, details to log)
Failure = tuple[str, "BaseException | None", str]
Outcome = tuple[Unit, "float | None", "Failure | None"]


class UnitFailedError(ContrastlabError):
    """A unit of the study failed; the units finished before it are kept."""

    def __init__(self, unit_id: str, message: str):
        super().__init__(message)
        self.unit_id = unit_id

    def __reduce__(self):  # picklable despite the extra constructor argument
        return (type(self), (self.unit_id, str(self)))


def pending_dependencies(todo: Sequence[Unit]) -> dict[str, list[str]]:
    """Unit id -> ids of its dependencies that are in ``todo`` (the others are done), in plan order."""
    ids = {u.id for u in todo}
    graph = {u.id: [d for d in u.deps if d in ids] for u in todo}
    position = {u.id: i for i, u in enumerate(todo)}
    for uid, deps in graph.items():
        late = [d for d in deps if position[d] >= position[uid]]
        if late:  # plan_units lists every unit after its dependencies; Slurm submission relies on it
            raise ContrastlabError(f"unit {uid} is listed before its dependency {late[0]}")
    return graph


def first_line(exc: BaseException) -> str:
    """``ExceptionType: first line of its message``: how a failure is named in one line."""
    text = str(exc).strip().splitlines()
    if isinstance(exc, ContrastlabError) and text:  # written for the user already: no type name
        return text[0]
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def exception_failure(exc: BaseException) -> Failure:
    """The failure of an outcome whose unit raised ``exc``: its line, itself, its traceback."""
    return first_line(exc), exc, "".join(traceback.format_exception(exc))


class Backend:
    """Where units run. The loop calls ``start`` for each unit it lets go and ``wait`` for the
    outcomes of the ones that ended; ``stop`` only when the loop itself is interrupted."""

    limit = 1  # units in flight at most
    holds_back = False  # True: it keeps a started unit waiting until its dependencies ended well
    display = True  # whether this process draws the study's progress display

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def in_flight(self) -> int:
        raise NotImplementedError

    def start(self, unit: Unit, after: list[str]) -> None:
        """Start ``unit``; ``after``: its dependencies in ``todo`` (all done unless ``holds_back``)."""
        raise NotImplementedError

    def wait(self) -> list[Outcome]:
        """Block until at least one started unit ended; return the ended ones in plan order."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every unit in flight now (Ctrl-C, or an error in the loop itself)."""


def run_ready_units(todo: list[Unit], backend: Backend, *, progress: bool = False) -> list[str]:
    """Start every unit of ``todo`` once it is ready, in plan order, at most ``backend.limit`` at
    a time; after a failure start nothing more, let the running ones end, raise UnitFailedError."""
    graph = pending_dependencies(todo)
    started: set[str] = set()
    done: set[str] = set()
    failed: set[str] = set()
    gate = started if backend.holds_back else done  # where a unit's dependencies must be to start it
    with tracking(todo, progress and backend.display) as tracker:
        try:
            while True:
                if tracker.failure is None:
                    for unit in todo:
                        if backend.in_flight() >= backend.limit:
                            break
                        if unit.id not in started and all(d in gate for d in graph[unit.id]):
                            tracker.started(unit)
                            started.add(unit.id)
                            backend.start(unit, graph[unit.id])
                if not backend.in_flight():
                    break
                for unit, seconds, failure in backend.wait():
                    if failure is None:
                        done.add(unit.id)
                        tracker.succeeded(unit, seconds)
                        continue
                    failed.add(unit.id)
                    broken = [d for d in graph[unit.id] if d in failed]
                    if broken:  # Slurm dropped it (kill-on-invalid-dep): not a failure of its own
                        tracker.failed(unit, f"not run, its dependency {broken[0]} failed")
                    else:
                        tracker.failed(unit, *failure)
        except BaseException:
            backend.stop()
            raise
    tracker.raise_if_failed()
    never = [u.id for u in todo if u.id not in started]
    if never:  # unreachable for a plan from plan_units: every dependency is in todo or done
        raise ContrastlabError(f"{len(never)} units never became ready, e.g. {never[0]}")
    return tracker.finished


class Tracker:
    """The loop's view of the run: which units finished or failed, logging, progress."""

    def __init__(self, todo: Sequence[Unit], display: Any = None):
        self.todo = list(todo)
        self.finished: list[str] = []
        self.failure: tuple[str, str, BaseException | None] | None = None  # (unit id, message, cause)
        self.display = display
        self.task = display.add_task("study", total=len(todo)) if display is not None else None
        self.running: list[str] = []

    def started(self, unit: Unit) -> None:
        self.running.append(unit.id)
        log.info("started %s", unit.id)
        self._describe()

    def succeeded(self, unit: Unit, seconds: float | None) -> None:
        self.running.remove(unit.id)
        self.finished.append(unit.id)
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        log.info("[%d/%d] finished %s%s", len(self.finished), len(self.todo), unit.id, took)
        if self.display is not None:
            self.display.advance(self.task)
        self._describe()

    def failed(self, unit: Unit, message: str, cause: BaseException | None = None, details: str = "") -> None:
        if unit.id in self.running:
            self.running.remove(unit.id)
        # One line per failure, never a traceback (a unit's is in its error.log; any other only with -v):
        # the first failure is the CLI's final error line, each later one is logged here.
        first = self.failure is None
        log.log(logging.INFO if first else logging.ERROR, "unit %s failed: %s", unit.id, message)
        if details:
            log.debug("unit %s failed:\n%s", unit.id, details.rstrip())
        if first:
            self.failure = (unit.id, message, cause)
        self._describe()

    def _describe(self) -> None:
        if self.display is None:
            return
        shown = ", ".join(self.running[:2]) + (f" +{len(self.running) - 2}" if len(self.running) > 2 else "")
        self.display.update(self.task, description=f"study: {shown or 'waiting'}")

    def raise_if_failed(self) -> None:
        if self.failure is None:
            return
        unit_id, message, cause = self.failure
        raise UnitFailedError(
            unit_id, f"unit {unit_id} failed: {message}; {len(self.finished)} of {len(self.todo)} units finished "
            "and are kept; fix the cause and run the same command again to resume"
        ) from cause


@contextmanager
def tracking(todo: Sequence[Unit], progress: bool) -> Iterator[Tracker]:
    """A :class:`Tracker` for ``todo``, drawing the study's progress display when ``progress``."""
    if not progress:
        yield Tracker(todo)
        return
    with live_display() as display:  # this process's display only; workers never draw
        tracker = Tracker(todo, display)
        yield tracker
        display.update(tracker.task, description="study: " + ("failed" if tracker.failure else "done"))
