"""The looks of a study run with ``--until-decided``: which look a report is, and its test level.

``contrastlab study --until-decided`` (study/sequential.py) adds seeds round by round and records
each round in study.json's history as ``{"sequential": {"seeds": n, "max_seeds": N, "decided":
[[claim, statistic, verdict], ...], ...}}``. Each round's report is one look at the claims; a verdict
a look reaches stands at every later look; the looks share the error budget α through a Lan–DeMets
O'Brien–Fleming-type spending function over the information fraction n / N
(:func:`contrastlab.stats.look_levels`), so that the chance of any false verdict over all looks
stays ≤ α.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..rundir import sequential_rounds
from ..stats import look_levels, obrien_fleming_spent


@dataclass(frozen=True)
class Look:
    number: int  # this look, 1-based
    seeds: int  # seeds per method at this look
    max_seeds: int  # the planned maximum (--max-seeds)
    alpha: float  # this look's test level: the α spent since the previous look
    spent: float  # α spent up to and including this look
    total: float  # the whole budget α

    def text(self) -> str:
        return (f"look {self.number} of a sequential study (seeds {self.seeds} of at most {self.max_seeds}): "
                f"tested at α = {self.alpha:.3g}, the increment of a Lan–DeMets O'Brien–Fleming-type spending "
                f"function at information fraction {self.seeds}/{self.max_seeds} ({self.spent:.3g} of α = "
                f"{self.total:g} spent over {self.number} look{'s' if self.number != 1 else ''})")


def _look_seeds(records: list[dict], seeds: int) -> list[int]:
    """The seed count of each look up to the one at ``seeds``: the distinct counts the rounds reached
    (a look repeated after an interruption sees the same data and spends nothing more)."""
    return sorted({int(r["seeds"]) for r in records if int(r["seeds"]) <= seeds} | {seeds})


def current_look(study: dict | None, seeds: int, alpha: float) -> Look | None:
    """The look a report of ``seeds`` seeds is, or None for a study not run with --until-decided."""
    records = sequential_rounds(study)
    if not records:
        return None
    max_seeds = int(records[-1]["max_seeds"])
    counts = _look_seeds(records, seeds)
    levels = look_levels([c / max_seeds for c in counts], alpha)
    return Look(len(counts), seeds, max_seeds, levels[-1], obrien_fleming_spent(seeds / max_seeds, alpha), alpha)


def earlier_verdicts(study: dict | None, seeds: int) -> tuple[tuple[str, str, str, int, int], ...]:
    """The verdicts the looks before the one at ``seeds`` reached, as recorded in their rounds'
    ``decided`` lists: (claim, statistic, verdict, look number, seeds at that look)."""
    records = sequential_rounds(study)
    counts = _look_seeds(records, seeds)
    return tuple((claim, statistic, verdict, counts.index(int(r["seeds"])) + 1, int(r["seeds"]))
                 for r in records if int(r["seeds"]) < seeds for claim, statistic, verdict in r.get("decided") or [])
