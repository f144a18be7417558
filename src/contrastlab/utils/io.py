"""Atomic, self-describing artifacts.

Every artifact ``X.ext`` has a JSON sidecar ``X.json`` written *after* the data, so a
sidecar's presence means its data file is complete. Every write goes to a temporary
file in the same folder and is renamed into place, so a killed process never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


TEMPORARY_SUFFIX = ".tmp"  # atomic_path's temporaries: ".<name>.<random>.tmp" beside the target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_orphaned_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files that :func:`atomic_path` left under ``folder`` when its process
    was killed mid-write; return how many. Only for a folder no other process is writing to."""
    orphans = [p for p in Path(folder).rglob(f".*{TEMPORARY_SUFFIX}") if p.is_file()]
    for orphan in orphans:
        orphan.unlink()
    return len(orphans)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def csv_text(rows: list[dict], fieldnames: list[str] | None = None) -> str:
    """Rows of dicts as CSV text with a header (the first row's keys unless ``fieldnames``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames or (list(rows[0]) if rows else []))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str | os.PathLike, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    """Write rows of dicts as a CSV file, atomically."""
    return write_text(path, csv_text(rows, fieldnames))


def sidecar_path(path: str | os.PathLike) -> Path:
    """``run/x.npy`` -> ``run/x.json``."""
    return Path(path).with_suffix(".json")


def save_array(path: str | os.PathLike, array: np.ndarray, meta: dict) -> Path:
    """Write ``array`` as .npy, then its sidecar ``meta`` (the completion marker)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array))
    write_json(sidecar_path(path), meta)
    return Path(path)


def load_array(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read an array saved by :func:`save_array` with its sidecar."""
    return np.load(path), read_json(sidecar_path(path))


def is_complete(path: str | os.PathLike) -> bool:
    """True when the artifact and its sidecar both exist."""
    return Path(path).exists() and sidecar_path(path).exists()
