"""Encoders trained elsewhere as methods of a study: the mapping entries of ``methods``.

An entry ``{name, family, checkpoints, mean?, std?, stem_padding?}`` names one checkpoint per seed
(in the order of ``seeds``) or exactly one that stands for every seed. Such a method has no
pretraining unit: its finetune units read the checkpoint file itself (by absolute path; the
unit's key holds the file's sha256, so a changed file is probed again), and everything
downstream of the probes includes it like any method. Its input normalization is ``mean``/``std``
when given, else the downstream task's training split's statistics (as a probe of the original
study normalizes); a contrastlab checkpoint keeps its own unless ``mean``/``std`` are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils.io import cached_file_digest

ENTRY_KEYS = ("name", "family", "checkpoints", "mean", "std", "stem_padding")


@dataclass(frozen=True)
class ExternalMethod:
    """One external entry of ``methods``, its checkpoints as absolute paths (``module:function`` as given)."""

    name: str
    family: str | None
    checkpoints: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    stem_padding: int | None = None

    def checkpoint(self, seed_index: int) -> str:
        """The checkpoint of the ``seed_index``-th seed of the study (the one file when one stands for all)."""
        return self.checkpoints[0] if len(self.checkpoints) == 1 else self.checkpoints[seed_index]


def resolve_path(spec: str) -> str:
    """A checkpoint path made absolute (``~`` expanded; relative to the current directory); a
    ``module:function`` spec that names no file is kept as given."""
    from ..models.foreign import MODULE_SPEC

    path = Path(spec).expanduser()
    if not path.exists() and MODULE_SPEC.match(spec):
        return spec
    return str(path.resolve())


def as_external(entry: Mapping[str, Any]) -> ExternalMethod:
    """An entry of ``methods`` (already checked by config_checks) as an ExternalMethod."""
    def floats(values):
        return None if values is None else tuple(float(v) for v in values)

    padding = entry.get("stem_padding")
    return ExternalMethod(str(entry["name"]), entry.get("family"), tuple(resolve_path(str(c)) for c in entry["checkpoints"]),
                          floats(entry.get("mean")), floats(entry.get("std")), None if padding is None else int(padding))


def external_methods(config) -> dict[str, ExternalMethod]:
    """{name: ExternalMethod} of the mapping entries of ``config.methods``, in order."""
    return {str(e["name"]): as_external(e) for e in config.methods if isinstance(e, Mapping)}


def builtin_methods(config) -> list[str]:
    """The names of ``config.methods`` that contrastlab pretrains."""
    return [str(e) for e in config.methods if not isinstance(e, Mapping)]


def file_sha256(path: str | Path) -> str | None:
    """sha256 of a file (cached while its size and mtime stay); None for a ``module:function`` spec."""
    path = Path(path)
    if not path.is_file():
        return None
    return cached_file_digest(path)


def encoder_normalization(config, method: str | None, data_mean: Sequence[float], data_std: Sequence[float],
                          contrastlab: bool) -> tuple[Sequence[float] | None, Sequence[float] | None, int | None]:
    """(mean, std, stem_padding) to load ``method``'s encoder with: an external entry's ``mean``/``std``
    when given, else the data's for a foreign encoder, else (a contrastlab checkpoint) None: its own."""
    ext = external_methods(config).get(method) if method is not None else None
    if ext is not None and ext.mean is not None and ext.std is not None:
        return ext.mean, ext.std, ext.stem_padding
    padding = ext.stem_padding if ext is not None else None
    return (None, None, padding) if contrastlab else (data_mean, data_std, padding)
