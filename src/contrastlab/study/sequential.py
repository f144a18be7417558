"""``contrastlab study --until-decided``: add seeds round by round until every claim is decided.

Each round is an ordinary study (:func:`contrastlab.study.runner.run_study`) of the seeds so far,
so finished units are reused and only the new seeds' units (and the analyses over all runs of a
task) run; its report is one look at the claims. Rounds stop when every tested claim is decided,
when the seeds reach ``max_seeds``, or when another round would likely pass ``max_hours``.

Error control over the repeated looks: the report tests look k at the α spent between looks k−1
and k by a Lan–DeMets O'Brien–Fleming-type spending function over the information fraction
seeds / max_seeds (report/looks.py), so the chance of any false verdict over all looks, with Holm
within each look, stays ≤ α whatever the number of looks.

Each round is recorded in study.json's history (``sequential``: seeds, max_seeds, its claims
decided). A run interrupted between or during rounds resumes with the same command: the
stored seeds (which extend the command's) are taken up where they stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import StudyConfig
from ..errors import ConfigError
from ..report.claims import INCONCLUSIVE, is_tested
from ..rundir import REPORT_TABLES, SEQUENTIAL, RunLock, note_run, read_study, report_dir, report_page, sequential_rounds
from .runner import StudySummary, run_study, study_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UntilDecided:
    """The limits of a sequential study."""

    max_seeds: int  # the planned maximum: the spending function's information fraction is seeds / this
    max_hours: float | None = None  # no new round once one more would likely end after this


@dataclass
class Round:
    seeds: int
    tested: int  # claims with a test (a p-value)
    undecided: int  # of those, still inconclusive
    seconds: float


@dataclass
class SequentialSummary:
    study: StudySummary  # the last round's
    rounds: list[Round] = field(default_factory=list)
    stop: str = ""  # why the rounds stopped
    seconds: float = 0.0


def next_seed(seeds: list[int]) -> int:
    """A seed not yet used: the last plus the seeds' usual spacing (0, 1 → 2; 0, 10, 20 → 30)."""
    step = seeds[-1] - seeds[-2] if len(seeds) >= 2 and seeds[-1] > seeds[-2] else 1
    candidate = seeds[-1] + step
    while candidate in seeds:
        candidate += 1
    return candidate


def resumed_config(config: StudyConfig, run_dir: Path) -> StudyConfig:
    """``config`` with the seeds a stored sequential study of the same config reached, when the
    stored seeds extend the command's; else ``config`` unchanged."""
    study = read_study(run_dir) if run_dir.exists() else None
    if not sequential_rounds(study):
        return config
    stored = list((study.get("config") or {}).get("seeds") or [])
    if len(stored) <= len(config.seeds) or stored[:len(config.seeds)] != list(config.seeds):
        return config
    extended = dataclasses.replace(config, seeds=stored)
    return extended if study_hash(extended) == study.get("config_hash") else config


def claim_outcomes(run_dir: Path) -> tuple[int, list[list[str]]]:
    """(tested claims, [claim, statistic, verdict] of those decided) of the run's report (tables/claims.csv)."""
    path = report_dir(run_dir) / REPORT_TABLES / "claims.csv"
    if not path.exists():
        return 0, []
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if is_tested(r.get("test", ""), float(r.get("p_value") or "nan"))]
    return len(rows), [[r["claim"], r["statistic"], r["verdict"]] for r in rows if r["verdict"] != INCONCLUSIVE]


def _look(config: StudyConfig, run_dir: Path, plan: UntilDecided, workers: int) -> Round:
    """Record this round's look in the history, build its report, count what it decided."""
    from ..report.build import build_report

    started = time.perf_counter()
    with RunLock(run_dir):
        note_run(run_dir, {SEQUENTIAL: {"seeds": len(config.seeds), "max_seeds": plan.max_seeds}})
        build_report(run_dir, workers=workers)
        tested, decided = claim_outcomes(run_dir)
        note_run(run_dir, {SEQUENTIAL: {"seeds": len(config.seeds), "max_seeds": plan.max_seeds, "tested": tested,
                                        "undecided": tested - len(decided), "decided": decided}})
    return Round(len(config.seeds), tested, tested - len(decided), time.perf_counter() - started)


def _stop_reason(config: StudyConfig, plan: UntilDecided, last: Round, elapsed: float, round_seconds: float) -> str:
    if last.tested and not last.undecided:
        return "every claim decided"
    if len(config.seeds) >= plan.max_seeds:
        return f"reached --max-seeds {plan.max_seeds}"
    if plan.max_hours is not None and elapsed + round_seconds > plan.max_hours * 3600:
        return f"another round would pass --max-hours {plan.max_hours:g}"
    return ""


def run_until_decided(config: StudyConfig, run_dir: str | Path, plan: UntilDecided, *, force: bool = False,
                      progress: bool = False) -> SequentialSummary:
    """Run rounds of the study, one more seed each, until the claims are decided or a limit is hit."""
    run_dir = Path(run_dir)
    if plan.max_seeds < len(config.seeds):
        raise ConfigError(f"--max-seeds {plan.max_seeds} is below the study's {len(config.seeds)} seeds; "
                          "give at least as many")
    started = time.perf_counter()
    config = resumed_config(config, run_dir)  # the stored study's own config: its hash matches
    extended = False
    workers = config.launcher.jobs if config.launcher.kind == "local" else 1
    summary = SequentialSummary(study=StudySummary(run_dir, None))
    while True:
        round_started = time.perf_counter()
        # After the first round the seeds (so the config hash) change: the units that match are reused.
        summary.study = run_study(config, run_dir, force=force or extended, progress=progress, build_report=False)
        last = _look(config, run_dir, plan, workers)
        last.seconds = time.perf_counter() - round_started
        summary.rounds.append(last)
        summary.study.report = report_page(run_dir)
        log.info("round with %d seeds: %d of %d claims undecided", last.seeds, last.undecided, last.tested)
        summary.stop = _stop_reason(config, plan, last, time.perf_counter() - started, last.seconds)
        if summary.stop:
            break
        config = dataclasses.replace(config, seeds=[*config.seeds, next_seed(list(config.seeds))])
        extended = True
    summary.seconds = time.perf_counter() - started
    return summary


def run_sequential_cli(config: StudyConfig, run_dir: Path, options: tuple[bool, int | None, float | None], *,
                       force: bool, progress: bool) -> tuple[StudySummary, str]:
    """The CLI's --until-decided / --max-seeds / --max-hours: check them, run, and say how the rounds went."""
    from ..distributed import is_distributed

    until_decided, max_seeds, max_hours = options
    if not until_decided:
        raise ConfigError("--max-seeds and --max-hours go with --until-decided")
    if max_seeds is None:
        raise ConfigError("--until-decided needs --max-seeds N (the most seeds per method it may add up to)")
    if max_hours is not None and not max_hours > 0:
        raise ConfigError(f"--max-hours must be > 0, got {max_hours}")
    if is_distributed():
        raise ConfigError("--until-decided runs its rounds in one process; start it without torchrun")
    result = run_until_decided(config, run_dir, UntilDecided(max_seeds, max_hours), force=force, progress=progress)
    result.study.seconds = result.seconds
    return result.study, "\n" + rounds_text(result)


def rounds_text(result: SequentialSummary) -> str:
    """"until decided: 3 looks (seeds 2 → 4), stopped: every claim decided, 412 s"."""
    if not result.rounds:
        return ""
    first, last = result.rounds[0], result.rounds[-1]
    return (f"until decided: {len(result.rounds)} look{'s' if len(result.rounds) != 1 else ''} in this command "
            f"(seeds {first.seeds} → {last.seeds}), {last.tested - last.undecided} of {last.tested} tested claims decided; "
            f"stopped: {result.stop}; {result.seconds:.0f} s")
