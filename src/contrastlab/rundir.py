"""The run directory: the one module that knows its layout, its manifests and its lock.

The run directory is the interface between the study (which writes it) and the report (which
reads only it)::

    DIR/config.yaml, DIR/study.json                     resolved config, its hash, run history
    DIR/.lock                                           held by the one process writing DIR
    DIR/pretrain/<method>/seed<k>/                      encoder.safetensors (+ .json), checkpoints/, metrics.csv
    DIR/finetune/<method>/seed<k>/task-<classes>/       probe.safetensors, snapshots.npy, history.csv, result.json
    DIR/analysis/<kind>/<method>/seed<k>/task-<c>/      one analysis of one probe (landscape, sharpness, robustness, ...)
    DIR/analysis/<kind>/task-<c>/                       one analysis over every run of a task (geometry, ...)
    DIR/report/                                         report.html, figures/*.png, tables/*.csv|md

Every unit folder ends with ``done.json``, its manifest: what the unit is (kind, method, seed,
task and its classes), the files it wrote (bytes, mtime, sha256), where and how it ran (device,
precision, versions) and how long it took. A unit is finished exactly when its manifest exists,
carries the unit's key and its files are unchanged. Readers find units by their manifests, never
by re-planning the study, so any run directory can be read: one of an older version (whose
``done.json`` predates manifests, see :func:`_legacy_fields`), and the output folders of
``contrastlab pretrain/finetune/analyze``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CorruptFileError, RunDirectoryError
from .utils.io import TEMPORARY_SUFFIX, file_digest, file_record, read_json, write_json

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"
CONFIG_FILE = "config.yaml"
MANIFEST = "done.json"
UNIT_MARKER = "unit.json"  # written when a unit starts: whose partial work a folder holds
LOCK_FILE = ".lock"
REPORT_DIR = "report"
MANIFEST_FORMAT = 2  # 1: the bare done.json of versions before manifests (unit, kind, key, seconds)

PER_RUN_KINDS = ("landscape", "sharpness", "robustness")  # one unit per probe
_BOOKKEEPING = {MANIFEST, UNIT_MARKER}


# ---- layout -------------------------------------------------------------------------------

def task_name(classes: Iterable[int]) -> str:
    """[0, 1, 2] -> "task-0-1-2": a task's folder name and its label in every table."""
    return "task-" + "-".join(str(int(c)) for c in classes)


def task_classes(name: str) -> list[int] | None:
    """Inverse of :func:`task_name` (None for a name it did not make)."""
    try:
        return [int(c) for c in name.removeprefix("task-").split("-")]
    except ValueError:
        return None


def unit_id(kind: str, method: str | None = None, seed: int | None = None, classes: Iterable[int] | None = None) -> str:
    """The folder of a unit, relative to the run directory."""
    parts = [kind] if kind in ("pretrain", "finetune") else ["analysis", kind]
    if method is not None:
        parts.append(method)
    if seed is not None:
        parts.append(f"seed{seed}")
    if classes is not None:
        parts.append(task_name(classes))
    return "/".join(parts)


def report_dir(run_dir: Path) -> Path:
    return Path(run_dir) / REPORT_DIR


# ---- manifests ----------------------------------------------------------------------------

def output_files(folder: Path) -> list[Path]:
    """Every file a unit wrote into ``folder`` (recursively), bookkeeping and temporaries excluded."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _BOOKKEEPING
                  and not (p.name.startswith(".") and p.name.endswith(TEMPORARY_SUFFIX)))


def write_manifest(folder: Path, fields: dict[str, Any]) -> Path:
    """Write ``folder/done.json``: ``fields`` plus a record of every file in the folder. Last write of a unit."""
    files = {p.relative_to(folder).as_posix(): file_record(p) for p in output_files(folder)}
    return write_json(folder / MANIFEST, {"format": MANIFEST_FORMAT, **fields, "files": files})


def read_manifest(folder: Path) -> dict | None:
    """The manifest of ``folder``; None when there is none. A corrupt one is :class:`CorruptFileError`."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    manifest = read_json(path)
    if not isinstance(manifest, dict) or "kind" not in manifest:
        raise CorruptFileError(f"corrupt manifest {path}: not a unit's done.json; delete it to recompute the unit")
    return manifest


def changed_outputs(folder: Path, manifest: dict) -> list[str]:
    """The files listed in ``manifest`` that are missing or whose content changed. Size and mtime
    decide when they match; a file whose mtime alone differs (a run directory copied without
    keeping times) is compared by its sha256."""
    problems = []
    for name, record in manifest.get("files", {}).items():
        path = folder / name
        if not path.exists():
            problems.append(f"{name} is missing")
            continue
        stat = path.stat()
        if stat.st_size != record.get("bytes"):
            problems.append(f"{name} changed")
        elif stat.st_mtime_ns != record.get("mtime_ns") and file_digest(path) != record.get("sha256"):
            problems.append(f"{name} changed")
    return problems


def _legacy_fields(unit: str) -> dict[str, Any]:
    """What a format-1 ``done.json`` (before manifests) did not say, from its unit id: the layout
    of those versions was ``<stage>/<method>/seed<k>/task-<classes>``."""
    parts = unit.split("/")
    out: dict[str, Any] = {}
    if parts and parts[0] == "analysis":
        parts = parts[1:]
    parts = parts[1:]  # the kind
    if parts and not parts[0].startswith(("seed", "task-")):
        out["method"] = parts.pop(0)
    if parts and parts[0].startswith("seed") and parts[0][4:].isdigit():
        out["seed"] = int(parts.pop(0)[4:])
    if parts and parts[0].startswith("task-"):
        out["task"] = parts[0]
        out["task_classes"] = task_classes(parts[0])
    return out


@dataclass(frozen=True)
class UnitRecord:
    """A finished unit as the run directory describes it."""

    id: str
    folder: Path
    kind: str
    method: str | None
    seed: int | None
    task: str | None  # task name, e.g. "task-0-1-2"
    task_classes: list[int] | None
    manifest: dict = field(repr=False)

    def path(self, name: str) -> Path:
        return self.folder / name

    @property
    def seconds(self) -> float:
        return float(self.manifest.get("seconds", 0.0))


def _record(run_dir: Path, folder: Path, manifest: dict) -> UnitRecord:
    uid = folder.relative_to(run_dir).as_posix() or "."
    fields = {**_legacy_fields(manifest.get("unit", uid)), **manifest} if manifest.get("format", 1) < 2 else manifest
    classes = fields.get("task_classes")
    return UnitRecord(id=uid, folder=folder, kind=str(fields["kind"]), method=fields.get("method"), seed=fields.get("seed"),
                      task=fields.get("task") or (task_name(classes) if classes else None),
                      task_classes=list(classes) if classes else None, manifest=fields)


def finished_units(run_dir: str | Path, kind: str | None = None) -> list[UnitRecord]:
    """Every finished unit under ``run_dir`` (of ``kind`` if given), sorted by id. A corrupt
    manifest is skipped with a warning (the study recomputes that unit)."""
    run_dir = Path(run_dir)
    records = []
    for marker in sorted(run_dir.rglob(MANIFEST)):
        if REPORT_DIR in marker.relative_to(run_dir).parts[:1]:
            continue
        try:
            manifest = read_manifest(marker.parent)
        except (CorruptFileError, OSError) as exc:
            log.warning("skipping %s: %s", marker, exc)
            continue
        if manifest is not None and (kind is None or manifest.get("kind") == kind):
            records.append(_record(run_dir, marker.parent, manifest))
    return sorted(records, key=lambda r: r.id)


# ---- the study file -----------------------------------------------------------------------

def read_study(run_dir: str | Path) -> dict | None:
    """``study.json`` (config, its hash, run history); None when the directory holds no study."""
    path = Path(run_dir) / STUDY_FILE
    if not path.exists():
        return None
    try:
        study = read_json(path)
    except CorruptFileError:
        study = None
    if not isinstance(study, dict) or "config_hash" not in study or not isinstance(study.get("history", []), list):
        raise CorruptFileError(
            f"corrupt {path}; the finished units are intact: rerun the same `contrastlab study` command "
            f"with --force to rewrite it (matching units are reused; its run history is lost)")
    return study


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def start_run(run_dir: Path, config_hash: str, name: str, config: dict, provenance: dict) -> int:
    """Record a run of the study in ``study.json`` (the history is kept); return its index.
    A corrupt ``study.json`` is rewritten (the caller refuses one unless forced)."""
    try:
        previous = read_study(run_dir) or {}
    except CorruptFileError:
        previous = {}
    history = list(previous.get("history", []))
    if not history and "provenance" in previous:  # a study.json of a version that kept one provenance
        history.append({**previous["provenance"], "start": None, "end": None, "note": "recorded before run history"})
    history.append({"start": now(), "end": None, "host": socket.gethostname(), "pid": os.getpid(), **provenance})
    write_json(Path(run_dir) / STUDY_FILE, {"config_hash": config_hash, "name": name, "config": config, "history": history})
    return len(history) - 1


def note_run(run_dir: Path, fields: dict, index: int = -1) -> None:
    """Add ``fields`` to history entry ``index`` of ``study.json`` (default: the last run), e.g. the
    round of a study run with --until-decided; nothing without a study or a history."""
    study = read_study(run_dir)
    history = (study or {}).get("history") or []
    if not history or not -len(history) <= index < len(history):
        return
    history[index].update(fields)
    write_json(Path(run_dir) / STUDY_FILE, study)


def end_run(run_dir: Path, index: int, status: str, units_run: int) -> None:
    """Close history entry ``index`` with its end time, status and the number of units it ran."""
    study = read_study(run_dir)
    if study is None or index >= len(study.get("history", [])):
        return
    study["history"][index].update(end=now(), status=status, units_run=units_run)
    write_json(Path(run_dir) / STUDY_FILE, study)


# ---- one writer at a time -----------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory, held by one process (``DIR/.lock``: pid, host, start).

    A second writer fails at once with a line naming the holder. A lock whose process is gone
    (same host) is taken over; a lock of another host is respected unless older than
    ``stale_after_s`` (the other host may still be running).
    """

    def __init__(self, run_dir: str | Path, stale_after_s: float = 7 * 24 * 3600):
        self.path = Path(run_dir) / LOCK_FILE
        self.stale_after_s = stale_after_s
        self.held = False

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half-written by a process killed while taking it

    def _is_stale(self, holder: dict) -> bool:
        if not holder:
            return time.time() - self.path.stat().st_mtime > 60
        if holder.get("host") == socket.gethostname():
            return not _alive(int(holder.get("pid", -1)))
        return time.time() - float(holder.get("time", 0)) > self.stale_after_s

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), "start": now()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released meanwhile
                if not self._is_stale(holder):
                    raise RunDirectoryError(
                        f"{self.path.parent} is in use by another contrastlab run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, started {holder.get('start')}); wait for it to finish, or delete "
                        f"{self.path} if that process is gone") from None
                log.warning("taking over the lock of a run that is gone (pid %s on %s)", holder.get("pid"), holder.get("host"))
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            return
        raise RunDirectoryError(f"could not take the lock {self.path}; another run keeps taking it")

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
