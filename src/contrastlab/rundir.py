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
ERROR_LOG = "error.log"  # a failed unit's traceback, in its folder (removed when it runs again)
REPORT_DIR = "report"  # the report's folder (report_dir); the names of a unit's files are further down
REPORT_PAGE = "report.html"  # in report_dir
REPORT_FIGURES = "figures"  # in report_dir: <name>.png
REPORT_TABLES = "tables"  # in report_dir: <name>.csv and .md
# What a study writes at the top of its run directory (besides the lock): a file or folder of these
# names that holds no unit was not written by a study.
STUDY_NAMES = (CONFIG_FILE, STUDY_FILE, "pretrain", "finetune", "analysis", REPORT_DIR)
MANIFEST_FORMAT = 2  # 1: the bare done.json of versions before manifests (unit, kind, key, seconds)

PER_RUN_KINDS = ("landscape", "sharpness", "robustness")  # one unit per probe
_BOOKKEEPING = {MANIFEST, UNIT_MARKER, ERROR_LOG}


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


def report_dir(run_dir: str | Path) -> Path:
    """``DIR/report``: report.html, figures/ and tables/."""
    return Path(run_dir) / REPORT_DIR


def report_page(run_dir: str | Path) -> Path:
    return report_dir(run_dir) / REPORT_PAGE


# ---- the files of one unit's folder -----------------------------------------------------------
# Every stage writes, and every reader finds, a unit's files by these names; a file's JSON sidecar
# (same name, .json) is written beside it by contrastlab.utils.io / contrastlab.checkpoint.

ENCODER = "encoder.safetensors"  # pretrain: the final encoder (what probes load)
CHECKPOINTS = "checkpoints"  # pretrain: the folder of epoch checkpoints (see checkpoint_file)
METRICS = "metrics.csv"  # pretrain: one row per epoch
PROBE = "probe.safetensors"  # finetune: the linear probe (the encoder too in full mode)
SNAPSHOTS = "snapshots.npy"  # finetune: (epochs+1, N, C) probabilities on the analysis split
HISTORY = "history.csv"  # finetune: one row per epoch
RESULT = "result.json"  # finetune: accuracies and the probe's settings
SURFACE = "surface.npy"  # landscape: the 2-D loss surface (see surface_file for the compared seeding)
SHARPNESS = "sharpness.json"  # sharpness
ROBUSTNESS = "robustness.json"  # robustness: its settings; the curves are attack_file(...)
PROGRESS = "progress.csv"  # geometry: t_w per run and epoch
INPCA = "inpca.npy"  # geometry: the InPCA map
INPCA_COMPARISON = "inpca_comparison.json"  # geometry with compare_inputs
TRAJECTORY = "trajectory.csv"  # trajectory: probe accuracy per pretraining epoch
TRAJECTORY_SUMMARY = "trajectory.json"  # trajectory: which epochs were read from finetune units, not fitted
ALIGNMENT = "alignment.json"  # alignment: alignment, uniformity, rank


def unit_file(unit: str | Path, name: str) -> str:
    """A unit's file relative to the run directory ("pretrain/simclr/seed0/encoder.safetensors"), as units list their inputs."""
    return f"{Path(unit).as_posix()}/{name}"


def checkpoint_name(epoch: int) -> str:
    """The stem of epoch ``epoch``'s checkpoint: "epoch_0007"."""
    return f"epoch_{epoch:04d}"


def checkpoint_file(folder: str | Path, epoch: int) -> Path:
    """``folder/checkpoints/epoch_XXXX.safetensors`` of a pretrain unit (its .json sidecar beside it)."""
    return Path(folder) / CHECKPOINTS / f"{checkpoint_name(epoch)}.safetensors"


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The last complete (sidecar present) epoch checkpoint of a pretrain unit's ``folder``, or None."""
    found = sorted(p for p in (Path(folder) / CHECKPOINTS).glob("epoch_*.safetensors") if p.with_suffix(".json").exists())
    return found[-1] if found else None


def attack_file(attack: str, space: str | None = None) -> str:
    """``<attack>.csv`` of a robustness unit; ``<attack>_<space>.csv`` for the compared space."""
    return f"{attack}.csv" if space is None else f"{attack}_{space}.csv"


def surface_file(seeding: str | None = None) -> str:
    """``surface.npy`` of a landscape unit; ``surface_<seeding>.npy`` for the compared direction seeding."""
    return SURFACE if seeding is None else f"surface_{seeding}.npy"


def surface_files(folder: str | Path) -> list[Path]:
    """Every surface of a landscape unit's folder (its own and a compared seeding's), sorted."""
    return sorted(Path(folder).glob("surface*.npy"))


def partial_surface_file(seeding: str | None = None) -> str:
    """The resume file of a surface's grid while it is computed (deleted when the surface is saved)."""
    return "partial.npy" if seeding is None else f"partial_surface_{seeding}.npy"


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
    """The files listed in ``manifest`` that are missing or whose content changed: every file's
    sha256 is compared, whatever its size and mtime say (an edit that kept both, ``touch -r``,
    is still a change). Costs one read of the unit's files (measured in docs/scaling.md)."""
    problems = []
    for name, record in manifest.get("files", {}).items():
        path = folder / name
        if not path.exists():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != record.get("bytes") or file_digest(path) != record.get("sha256"):
            problems.append(f"{name} changed")
    return problems


def input_digests(run_dir: Path, inputs: Iterable[Path]) -> dict[str, str | None]:
    """The sha256 of each input file (relative to ``run_dir``) as its producing unit's manifest
    records it; None for a file no manifest under ``run_dir`` lists (given by the user). A consumer
    stores these when it finishes: a producer recomputed since, with other bytes, makes it stale."""
    digests: dict[str, str | None] = {}
    for path in inputs:
        path = Path(path)
        try:
            relative = path.resolve().relative_to(Path(run_dir).resolve())
        except ValueError:
            continue
        digests[relative.as_posix()] = _recorded_digest(Path(run_dir), relative)
    return digests


def _recorded_digest(run_dir: Path, relative: Path) -> str | None:
    """The sha256 the manifest of the unit folder holding ``relative`` records for it, or None."""
    for parent in relative.parents:
        if parent == Path("."):
            break
        try:
            manifest = read_manifest(run_dir / parent)
        except CorruptFileError:
            return None
        if manifest is not None:
            record = manifest.get("files", {}).get(relative.relative_to(parent).as_posix())
            return record.get("sha256") if isinstance(record, dict) else None
    return None


def stale_inputs(run_dir: Path, manifest: dict) -> list[str]:
    """The inputs of a finished unit whose producer has recorded other bytes since it finished."""
    recorded = manifest.get("input_sha256") or {}
    return [name for name, digest in recorded.items()
            if digest is not None and _recorded_digest(Path(run_dir), Path(name)) != digest]


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


def verify_run(run_dir: str | Path) -> tuple[list[tuple[str, str]], int]:
    """Check every finished unit's files against its manifest (sha256): ([(unit id, "NAME changed"
    or "NAME is missing"), ...], number of units checked)."""
    units = finished_units(run_dir)
    return [(unit.id, problem) for unit in units for problem in changed_outputs(unit.folder, unit.manifest)], len(units)


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


SEQUENTIAL = "sequential"  # the key of a round's record in a history entry (study --until-decided)


def sequential_rounds(study: dict | None) -> list[dict]:
    """The records of the rounds of a study run with --until-decided, in the history's order."""
    return [entry[SEQUENTIAL] for entry in (study or {}).get("history") or []
            if isinstance(entry, dict) and isinstance(entry.get(SEQUENTIAL), dict)]


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


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22), or None
    where there is no /proc or no such process. With its pid, it names one process for good: a
    pid reused by a later process has another start."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # after "pid (comm)": state is field 3, start field 22
    except (IndexError, ValueError):
        return None


def is_contrastlab_process(pid: int) -> bool:
    """Whether live process ``pid`` runs contrastlab, from its command line (/proc/<pid>/cmdline):
    ``python -m contrastlab``, the ``contrastlab`` script, or a script or pytest that runs it in-process
    (any argument naming contrastlab or pytest). Without /proc (not Linux), any live process counts."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _alive(pid)
    except OSError:  # exists, but not readable (another user): assume the worst, a run
        return True
    return any(b"contrastlab" in w or b"pytest" in w for w in words)


def _holder_runs(holder: dict) -> bool:
    """Whether the process a (well-formed) lock of this host names is the run that took it."""
    pid = holder["pid"]
    if not _alive(pid):
        return False
    recorded = holder.get("proc_start")
    if isinstance(recorded, int):
        current = process_start(pid)
        if current is not None:
            return current == recorded  # the very process that took the lock, not a reused pid
    return is_contrastlab_process(pid)


# In a study's worker processes: the pid of the study's process, which holds the run directory's lock.
LOCK_OWNER_ENV = "CONTRASTLAB_LOCK_PID"


class LostLockError(RunDirectoryError):
    """This process works for a run that no longer holds its run directory's lock."""


class RunLock:
    """An exclusive lock on a run directory, held by one process (``DIR/.lock``: pid, its start
    time, host, start).

    A second writer fails at once with a line naming the holder. A lock of this host is stale
    (taken over) when its process is gone or is not the run that took it (a reused pid: another
    start time; a lock without one: a process whose command line does not run contrastlab); a
    lock of another host is respected unless older than ``stale_after_s``. A lock that is not
    what this class writes is one line saying how to remove it.
    """

    def __init__(self, run_dir: str | Path, stale_after_s: float = 7 * 24 * 3600):
        self.path = Path(run_dir) / LOCK_FILE
        self.stale_after_s = stale_after_s
        self.held = False

    def _holder(self) -> dict | None:
        """The lock's holder; None when there is no lock. A malformed lock is RunDirectoryError
        (read twice: a lock being taken is an empty file for an instant)."""
        for attempt in range(2):
            try:
                holder = json.loads(self.path.read_text())
            except FileNotFoundError:
                return None
            except (OSError, ValueError):
                holder = None
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int) and not isinstance(holder["pid"], bool) \
                    and holder["pid"] > 0 and isinstance(holder.get("host"), str):
                return holder
            time.sleep(0.2 * (attempt == 0))
        raise RunDirectoryError(f"malformed lock {self.path} (not a lock contrastlab writes); if no contrastlab run "
                                f"is writing {self.path.parent}, delete {self.path} and run again")

    def _is_stale(self, holder: dict) -> bool:
        if holder["host"] == socket.gethostname():
            return not _holder_runs(holder)
        stamp = holder.get("time")
        return isinstance(stamp, (int, float)) and time.time() - stamp > self.stale_after_s

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "proc_start": process_start(os.getpid()), "host": socket.gethostname(),
              "time": time.time(), "start": now()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released meanwhile
                if not self._is_stale(holder):
                    started = f", started {holder['start']}" if isinstance(holder.get("start"), str) else ""
                    raise RunDirectoryError(
                        f"{self.path.parent} is in use by another contrastlab run (pid {holder['pid']} on "
                        f"{holder['host']}{started}); wait for it to finish, or delete {self.path} if that process is gone") from None
                log.warning("taking over the lock of a run that is gone (pid %s on %s)", holder["pid"], holder["host"])
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            return
        raise RunDirectoryError(f"could not take the lock {self.path}; another run keeps taking it")

    def release(self) -> None:
        if self.held:
            try:
                holder = self._holder()
            except RunDirectoryError:
                holder = None
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_lock_held(run_dir: str | Path) -> None:
    """In a worker of a study (its environment names the lock's pid, :data:`LOCK_OWNER_ENV`):
    raise :class:`LostLockError` unless that process still holds ``run_dir``'s lock. Called before
    a unit's manifest is written, so that no unit is finished for a run that has died (and whose
    directory another run may be writing). Elsewhere (no such variable) a no-op: the caller holds it."""
    owner = os.environ.get(LOCK_OWNER_ENV)
    if not owner:
        return
    try:
        holder = json.loads((Path(run_dir) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        holder = None
    if not (isinstance(holder, dict) and str(holder.get("pid")) == owner and _alive(int(owner))):
        raise LostLockError(f"the study (pid {owner}) no longer holds {Path(run_dir) / LOCK_FILE}; this unit is not marked finished")
