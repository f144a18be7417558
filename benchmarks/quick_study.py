"""The quick study of this checkout against a reference commit, back to back on one machine.

    .venv/bin/python benchmarks/quick_study.py                        # reference 76c4585, each once
    .venv/bin/python benchmarks/quick_study.py --order new ref        # the other order
    .venv/bin/python benchmarks/quick_study.py --transfer-only --set 'seeds=[2,3]' --name transfer_seeds23
    .venv/bin/python benchmarks/quick_study.py --new-set analysis.representation.enabled=false ...  # this version only

Both versions run ``python -m contrastlab study --preset quick`` in a fresh run directory, one
after the other, with this interpreter (the reference's sources come first on PYTHONPATH, from a
``git worktree`` of the reference commit that the script creates when it is missing). Reported:

- the wall time of each command and the study's own line ("study finished in N s");
- unit seconds summed per stage kind, from the ``done.json`` manifests both versions write;
- transfer: the probe's validation accuracy of each method minus that of the random-init encoder,
  per (seed, task), averaged; and the paired difference this version − reference with a 95%
  t-interval over the (seed, task) pairs (same seeds, tasks and data in both runs);
- the report's tables (``report/tables/*.csv``) compared cell by cell over the columns both
  versions write: which are identical, which differ, which only one version writes.

``--transfer-only`` switches every analysis off in both versions (the keys each version has,
found by asking its own config class), so only pretraining, probes and the report run: the way to
add seeds to the transfer comparison at a fraction of the cost. Results go to
``benchmarks/results/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from common import command_line, environment, fmt, markdown_table, write_results
from contrastlab.stats import summarize

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

# Asked of each version's own config class: the analyses that can be switched off.
LIST_ANALYSES = ("import dataclasses, contrastlab.config as c; "
                 "print(' '.join(f.name for f in dataclasses.fields(c.AnalysisConfig) "
                 "if any(g.name == 'enabled' for g in dataclasses.fields(f.type if not isinstance(f.type, str) "
                 "else getattr(c, f.type)))))")


def reference_tree(commit: str, path: Path) -> Path:
    """A checkout of ``commit`` at ``path`` (a git worktree, created once)."""
    if not (path / "src" / "contrastlab").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def version_env(source: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(source / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def analyses_off(source: Path) -> list[str]:
    """``--set analysis.<name>.enabled=false`` for every analysis the version at ``source`` has."""
    names = subprocess.run([sys.executable, "-c", LIST_ANALYSES], env=version_env(source), check=True,
                           capture_output=True, text=True).stdout.split()
    return [f"analysis.{name}.enabled=false" for name in names]


def run_study(source: Path, out: Path, overrides: list[str], log: Path) -> dict:
    """Run the quick study of the sources at ``source`` into ``out``; wall seconds and the study's line."""
    command = [sys.executable, "-m", "contrastlab", "study", "--preset", "quick", "--out", str(out), "--no-progress"]
    for item in overrides:
        command += ["--set", item]
    load_before, started = os.getloadavg()[0], time.perf_counter()
    with open(log, "w") as stream:
        code = subprocess.run(command, env=version_env(source), stdout=stream, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    text = log.read_text()
    if code != 0:
        raise SystemExit(f"{source}: the study failed (exit {code}); see {log}")
    found = re.search(r"study finished in (\d+) s: (\d+) units run", text)
    return {"wall_s": wall, "study_s": int(found.group(1)) if found else None, "units": int(found.group(2)) if found else None,
            "load_average_1min": [load_before, os.getloadavg()[0]]}  # before and after: was the machine idle?


def unit_seconds(run_dir: Path) -> dict[str, float]:
    """Unit seconds summed per stage kind, from every done.json."""
    totals: dict[str, float] = defaultdict(float)
    for manifest in run_dir.rglob("done.json"):
        record = json.loads(manifest.read_text())
        totals[record.get("kind") or record["unit"].split("/")[0]] += float(record.get("seconds") or 0.0)
    return dict(totals)


def probe_accuracies(run_dir: Path) -> dict[tuple[str, int, str], float]:
    """(method, seed, task) -> the probe's validation accuracy (%) from finetune/.../result.json."""
    found = {}
    for result in (run_dir / "finetune").glob("*/seed*/*/result.json"):
        method, seed, task = result.parent.parent.parent.name, int(result.parent.parent.name[4:]), result.parent.name
        found[(method, seed, task)] = 100 * float(json.loads(result.read_text())["val_accuracy"])
    return found


def gains(accuracy: dict) -> dict[str, dict[tuple[int, str], float]]:
    """method -> (seed, task) -> accuracy gain over the random-init encoder, in points."""
    out: dict = defaultdict(dict)
    for (method, seed, task), value in accuracy.items():
        if method != "random" and ("random", seed, task) in accuracy:
            out[method][(seed, task)] = value - accuracy[("random", seed, task)]
    return out


def paired(new: dict, ref: dict) -> dict:
    """Mean of new − ref over the shared keys, with a 95% t-interval."""
    keys = sorted(set(new) & set(ref))
    return t_interval(np.array([new[k] - ref[k] for k in keys]))


def paired_by_seed(new: dict, ref: dict) -> dict:
    """As :func:`paired`, but over seeds: each seed's differences averaged over its tasks first.

    The probes of one seed share one pretraining run, so its tasks are not independent pairs;
    the seeds are. This is the interval to read when a change alters pretraining."""
    by_seed: dict = defaultdict(list)
    for key in set(new) & set(ref):
        by_seed[key[0]].append(new[key] - ref[key])
    return t_interval(np.array([statistics.fmean(by_seed[seed]) for seed in sorted(by_seed)]))


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def compare_tables(ref_dir: Path, new_dir: Path) -> dict:
    """The report tables of two run directories, cell by cell over the columns both have:
    {"identical": [file, ...], "differ": {file: [columns that differ, or "rows"]}, "only_ref": [...], "only_new": [...]}."""
    ref, new = ({p.name: p for p in (d / "report" / "tables").glob("*.csv")} for d in (ref_dir, new_dir))
    out: dict = {"identical": [], "differ": {}, "only_ref": sorted(set(ref) - set(new)), "only_new": sorted(set(new) - set(ref))}
    for name in sorted(set(ref) & set(new)):
        (ref_columns, ref_rows), (new_columns, new_rows) = read_table(ref[name]), read_table(new[name])
        shared = [c for c in ref_columns if c in new_columns]
        columns = [c for c in shared if any(a[c] != b[c] for a, b in zip(ref_rows, new_rows))]
        columns += ["rows"] if len(ref_rows) != len(new_rows) else []
        if columns or not shared:
            out["differ"][name] = columns or ["no shared column"]
        else:
            out["identical"].append(name)
    return out


def tables_text(tables: dict) -> str:
    """One sentence for the results file: which report tables match, which columns differ."""
    differ = "; ".join(f"{name} ({', '.join(columns)})" for name, columns in tables["differ"].items())
    return (f"Report tables, cell by cell over the columns both versions write: {len(tables['identical'])} identical"
            f"{'; differing columns: ' + differ if differ else ', none differs'}"
            f"{'; only this version writes: ' + ', '.join(tables['only_new']) if tables['only_new'] else ''}"
            f"{'; only the reference writes: ' + ', '.join(tables['only_ref']) if tables['only_ref'] else ''}.")


def t_interval(diff: np.ndarray) -> dict:
    """Mean of ``diff`` with a 95% t-interval (:func:`contrastlab.stats.summarize`), JSON-ready:
    None where it is undefined (no mean without values, no bounds below two)."""
    s = summarize(diff, confidence=0.95)

    def plain(value: float) -> float | None:
        return None if math.isnan(value) else value

    return {"n": s.n, "mean": plain(s.mean), "low": plain(s.ci_low), "high": plain(s.ci_high)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default="76c4585", help="commit to compare with")
    parser.add_argument("--reference-tree", type=Path, default=Path("/tmp/contrastlab-reference"),
                        help="where the reference commit is checked out (git worktree, created when missing)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/quick_study_bench"), help="run directories and logs")
    parser.add_argument("--order", nargs=2, default=["ref", "new"], choices=["ref", "new"], help="which runs first")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="--set passed to both studies")
    parser.add_argument("--new-set", dest="new_overrides", action="append", default=[],
                        help="--set passed to this version's study only (keys the reference does not have)")
    parser.add_argument("--transfer-only", action="store_true", help="switch every analysis off in both versions")
    parser.add_argument("--name", default="quick_study", help="results/<name>.json and .md")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results files")
    args = parser.parse_args()
    if sorted(args.order) != ["new", "ref"]:
        parser.error("--order takes ref and new, once each")

    sources = {"ref": reference_tree(args.reference, args.reference_tree), "new": REPO}
    args.out.mkdir(parents=True, exist_ok=True)
    runs, seconds, gain = {}, {}, {}
    for label in args.order:
        run_dir = args.out / label
        shutil.rmtree(run_dir, ignore_errors=True)
        overrides = args.overrides + (args.new_overrides if label == "new" else [])
        overrides += analyses_off(sources[label]) if args.transfer_only else []
        runs[label] = run_study(sources[label], run_dir, overrides, args.out / f"{label}.log")
        seconds[label] = unit_seconds(run_dir)
        gain[label] = gains(probe_accuracies(run_dir))
        print(f"{label}: {runs[label]['wall_s']:.1f} s wall, study {runs[label]['study_s']} s, {runs[label]['units']} units", flush=True)

    ratio = runs["new"]["wall_s"] / runs["ref"]["wall_s"]
    tables = compare_tables(args.out / "ref", args.out / "new")
    methods = [m for m in ("simclr", "supcon", "supce") if m in gain["new"] or m in gain["ref"]]
    transfer = {m: {"ref": statistics.fmean(gain["ref"][m].values()), "new": statistics.fmean(gain["new"][m].values()),
                    "new_minus_ref": paired(gain["new"][m], gain["ref"][m]),
                    "new_minus_ref_by_seed": paired_by_seed(gain["new"][m], gain["ref"][m])} for m in methods}
    kinds = sorted(set(seconds["ref"]) | set(seconds["new"]), key=lambda k: -max(seconds["ref"].get(k, 0), seconds["new"].get(k, 0)))

    env = environment("cpu")
    loads = ", ".join(f"{label} {runs[label]['load_average_1min'][0]:.2f} → {runs[label]['load_average_1min'][1]:.2f}" for label in args.order)
    lines = [f"Reference {args.reference} against this checkout, back to back ({' then '.join(args.order)}) on "
             f"{env['cpu_count']} CPUs ({env['device_name']}), torch {env['torch']}, {env['utc']}; "
             f"1-minute load average before → after each run: {loads}.", ""]
    lines.append(markdown_table(
        ["", f"reference {args.reference}", "this version", "ratio"],
        [["wall time of the command (s)", fmt(runs["ref"]["wall_s"], 4), fmt(runs["new"]["wall_s"], 4), f"{ratio:.2f}"],
         ["study's own line (s)", runs["ref"]["study_s"], runs["new"]["study_s"], ""],
         ["units run", runs["ref"]["units"], runs["new"]["units"], ""]]
        + [[f"{kind} (unit seconds)", f"{seconds['ref'].get(kind, 0):.1f}", f"{seconds['new'].get(kind, 0):.1f}", ""] for kind in kinds],
        "lrrr"))
    lines += ["", "Transfer: probe accuracy gain over the random-init encoder (points, mean over seeds × tasks); "
              "paired difference this version − reference with a 95% t-interval over the (seed, task) pairs, and "
              "over the seeds (each seed's tasks averaged first: they share a pretraining run, so this is the "
              "interval to read when pretraining changed):", ""]

    def interval(d: dict) -> str:
        if d["mean"] is None:
            return "—"
        return f"{d['mean']:+.1f} [{fmt(d['low'])}, {fmt(d['high'])}]" if d["low"] is not None else f"{d['mean']:+.1f}"

    lines.append(markdown_table(
        ["method", "reference", "this version", "difference [95% CI], pairs", "pairs", "difference [95% CI], seeds", "seeds"],
        [[m, f"{t['ref']:+.1f}", f"{t['new']:+.1f}", interval(t["new_minus_ref"]), t["new_minus_ref"]["n"],
          interval(t["new_minus_ref_by_seed"]), t["new_minus_ref_by_seed"]["n"]] for m, t in transfer.items()], "lrrrrrr"))
    lines += ["", tables_text(tables)]
    results = {"reference": args.reference, "order": args.order, "overrides": args.overrides, "new_overrides": args.new_overrides,
               "transfer_only": args.transfer_only,
               "runs": runs, "ratio": ratio, "unit_seconds": seconds, "transfer": transfer, "tables": tables,
               "gains": {label: {m: {f"seed{s}/{t}": v for (s, t), v in by.items()} for m, by in g.items()} for label, g in gain.items()},
               "environment": env}
    paths = write_results(args.results / f"{args.name}.json", results, "\n".join(lines), command=command_line())
    print("\n".join(lines))
    print(f"written: {', '.join(map(str, paths))}")


if __name__ == "__main__":
    main()
