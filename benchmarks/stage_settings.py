"""One stage's units under different settings, timed as the quick study runs them.

    .venv/bin/python -m contrastlab study --preset quick --out runs/quick     # once: a finished quick run
    .venv/bin/python benchmarks/stage_settings.py --stage landscape \\
        --variant analysis.landscape.batch_size=64 --variant default        # → results/stage_settings_landscape.md

The quick study runs its analysis units two at a time, one thread each. This script does the
same: two worker processes (one thread each) at once, each running its half of the stage's
units (``--units`` per process) under every ``--variant`` in turn, ``--repeats`` rounds, on a
copy of the finished run (so the trained models, probes and data are those of the study). A
variant is "default" or ``key=value`` config overrides joined by ";". Reports seconds per unit
for every (variant, round, process); the first round includes each process's one-time costs
(data generation, imports), so read the later rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import command_line, environment, markdown_table, temporary_directory, write_results


def worker(run_dir: Path, stage: str, half: int, units: int, variants: list[str], repeats: int) -> dict:
    """In a worker process: seconds per unit for each variant and round."""
    import torch

    torch.set_num_threads(1)
    from contrastlab.config_checks import load_config
    from contrastlab.study.plan import plan_units
    from contrastlab.study.units import run_unit

    configs = {v: load_config("quick", [] if v == "default" else v.split(";")) for v in variants}
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant, config in configs.items():
            chosen = [u for u in plan_units(config) if u.kind == stage][half::2][:units]
            started = time.perf_counter()
            for unit in chosen:
                run_unit(unit, config, run_dir)
            seconds[variant].append((time.perf_counter() - started) / len(chosen))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/quick"), help="a finished quick run directory (copied, not changed)")
    parser.add_argument("--stage", default="landscape")
    parser.add_argument("--variant", action="append", help='"default" or key=value overrides joined by ";" (repeatable)')
    parser.add_argument("--units", type=int, default=5, help="units per process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default=None, help="results file name (default stage_settings_<stage>)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = args.variant or ["default"]
    if args.worker is not None:
        print(json.dumps(worker(args.run, args.stage, args.worker, args.units, variants, args.repeats)))
        return
    if not (args.run / "study.json").exists():
        raise SystemExit(f"{args.run} is not a finished run; run `contrastlab study --preset quick --out {args.run}` first")
    with temporary_directory("stage_settings_") as tmp:
        copy = tmp / "run"
        shutil.copytree(args.run, copy)
        base = [sys.executable, __file__, "--run", str(copy), "--stage", args.stage, "--units", str(args.units),
                "--repeats", str(args.repeats)] + [f"--variant={v}" for v in variants]
        processes = [subprocess.Popen(base + ["--worker", str(half)], stdout=subprocess.PIPE, text=True) for half in (0, 1)]
        outputs = [p.communicate()[0] for p in processes]
        if any(p.returncode for p in processes):
            raise SystemExit("a worker failed (its error is above)")
    per_process = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    rows, results = [], {}
    for variant in variants:
        rounds = [[p[variant][r] for p in per_process] for r in range(args.repeats)]
        later = [s for r in rounds[1:] for s in r] or [s for r in rounds for s in r]
        median = statistics.median(later)
        results[variant] = {"seconds_per_unit": rounds, "median_after_first_round": median}
        rows.append([variant, " / ".join(" & ".join(f"{s:.2f}" for s in r) for r in rounds), f"{median:.2f}"])
    command = command_line()
    markdown = "\n".join([
        f"# {args.stage} units under different settings (two processes at once, one thread each)", "",
        f"{args.units} units per process, {args.repeats} rounds; seconds per unit per round as process 0 & process 1.", "",
        markdown_table(["variant", "s per unit, rounds 1 / 2 / …", "median after round 1"], rows, "llr"), "",
    ])
    name = args.name or f"stage_settings_{args.stage}"
    here = Path(__file__).resolve().parent
    write_results(here / "results" / f"{name}.json", {"stage": args.stage, "variants": results, "environment": environment("cpu")},
                  markdown, command=command)
    print(markdown)


if __name__ == "__main__":
    main()
