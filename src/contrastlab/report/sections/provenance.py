"""Provenance: the study's runs (study.json history), wall time per stage, devices and precisions."""

from __future__ import annotations

from collections import Counter

from omegaconf import OmegaConf

from ... import rundir
from .. import html as h
from ..context import KINDS, ReportContext, Section
from ..faithfulness import behaviour_rows, originals_used
from ..tables import write_table

HISTORY_COLUMNS = ("start", "end", "host", "device", "device_name", "status", "units_run")


def _device(manifest: dict) -> str:
    """"cuda:0 (NVIDIA H200)", "cpu (AMD EPYC)", or "not recorded" (a manifest of an older version)."""
    device, name = manifest.get("device"), manifest.get("device_name")
    if device is None:
        return "not recorded"
    return f"{device} ({name})" if name else str(device)
VERSION_KEYS = ("contrastlab", "torch", "numpy", "python", "cuda", "platform")


def history_rows(study: dict | None) -> list[dict]:
    """One row per run of the study; a study.json of an older version holds one provenance instead."""
    if not study:
        return []
    history = study.get("history") or ([{**study["provenance"], "note": "recorded before run history"}]
                                       if study.get("provenance") else [])
    rows = []
    for run in history:
        versions = ", ".join(f"{k} {run[k]}" for k in VERSION_KEYS if run.get(k))
        rows.append({**{c: "" if run.get(c) is None else run[c] for c in HISTORY_COLUMNS},
                     "versions": versions, **({"note": run["note"]} if run.get("note") else {})})
    return rows


def stage_times(ctx: ReportContext) -> list[dict]:
    """Per stage: finished units, wall time summed from their manifests, devices and precisions found."""
    rows = []
    for kind in [*KINDS, *sorted(set(ctx.run.units) - set(KINDS))]:
        units = ctx.run.units.get(kind) or []
        if not units:
            continue
        devices = Counter(_device(u.manifest) for u in units)
        precisions = Counter(str(u.manifest.get("precision") or "not recorded") for u in units)
        rows.append({"stage": kind, "units": len(units), "seconds": round(sum(u.seconds for u in units), 1),
                     "devices": "; ".join(f"{d} ×{n}" for d, n in devices.most_common()),
                     "precisions": "; ".join(f"{p} ×{n}" for p, n in precisions.most_common())})
    return rows


def provenance_section(ctx: ReportContext) -> None:
    run = ctx.run
    section = Section("Provenance", "provenance")
    times = stage_times(ctx)
    write_table(ctx.table_dir, "stage_times", times)
    total = sum(t["seconds"] for t in times)
    study = run.study or {}
    section.body.append(h.paragraph(
        (f"Config hash {study['config_hash']}; " if study.get("config_hash") else "No study.json: a folder of single units; ")
        + f"seeds {run.seeds}; wall time of the finished units {total:.0f} s (summed from their manifests)."))
    section.body += ["<h3>Stages</h3>", h.table(times)]
    if run.config:
        behaviours = behaviour_rows(run.config)
        write_table(ctx.table_dir, "original_behaviours", behaviours)
        used = originals_used(run.config)
        section.body += ["<h3>Behaviours of the original code</h3>", h.paragraph(
            ("This run used the original code's behaviour for " + ", ".join(used) + ". " if used else
             "This run used no behaviour of the original code where it differs from the correction. ")
            + "'same': the original and the corrected value agree (listed because the paper's text says otherwise "
              "or the key exists for comparison). docs/design-notes.md gives the source of each."),
            h.table(behaviours)]
    history = history_rows(run.study)
    if history:
        section.body += ["<h3>Runs of this study</h3>", h.table(history)]
    if run.config:
        stored = run.run_dir / rundir.CONFIG_FILE
        text = stored.read_text() if stored.exists() else OmegaConf.to_yaml(run.config)
        section.body.append(h.details("Resolved configuration", f"<pre>{h.esc(text)}</pre>"))
    ctx.sections.append(section)
