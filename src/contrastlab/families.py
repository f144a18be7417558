"""Which family each pretraining method belongs to: the axis the study's question is asked along.

Built-in methods have a fixed family here (the one place that says so); an encoder trained
elsewhere and given as a mapping in ``methods`` names its own (``family:``). The report reads a
run's families from its stored config through :func:`method_families`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError

FAMILIES = ("contrastive", "non-contrastive", "supervised", "baseline")

BUILTIN_FAMILIES: dict[str, str] = {
    "simclr": "contrastive",
    "supcon": "contrastive",
    "mocov2": "contrastive",
    "byol": "non-contrastive",
    "simsiam": "non-contrastive",
    "barlow_twins": "non-contrastive",
    "vicreg": "non-contrastive",
    "supce": "supervised",
    "random": "baseline",
}


def entry_name(entry: str | Mapping[str, Any]) -> str:
    """The method name of one ``methods`` entry: a built-in name, or an external mapping's ``name``."""
    return str(entry["name"]) if isinstance(entry, Mapping) else str(entry)


def family_of(entry: str | Mapping[str, Any]) -> str:
    """The family of one ``methods`` entry (built-in name or external mapping)."""
    if isinstance(entry, Mapping):
        family = entry.get("family")
        if family not in FAMILIES:
            raise ConfigError(f"method '{entry.get('name')}': family must be one of {', '.join(FAMILIES)}, got {family!r}")
        return str(family)
    if entry not in BUILTIN_FAMILIES:
        raise ConfigError(f"unknown method '{entry}'; valid: {', '.join(sorted(BUILTIN_FAMILIES))} (or a mapping with checkpoints)")
    return BUILTIN_FAMILIES[entry]


def method_families(entries: Iterable[str | Mapping[str, Any]], random_baseline: bool = True) -> dict[str, str]:
    """{method name: family} for a study's ``methods`` list (as stored in config.yaml), in order,
    with the random-init baseline last when the study probes it. A name not known here whose
    entry gives no family (a run directory of a later version) is reported as ``"unknown"``."""
    families: dict[str, str] = {}
    for entry in entries:
        name = entry_name(entry)
        try:
            families[name] = family_of(entry)
        except ConfigError:
            families[name] = "unknown"
    if random_baseline:
        families["random"] = "baseline"
    return families
