"""The report's one colour scheme: a hue family per method family, a fixed shade per method.

contrastive methods are blues, non-contrastive greens, supervised oranges, the random-init
baseline grey, and a method of unknown family purple. Built-in methods have fixed shades; a
method trained elsewhere (an external ``methods`` entry) takes the next free shade of its
family, in the run's order once :func:`use_families` has told the palette the run's methods
(else a shade chosen from its name, stable but possibly shared). Every figure module colours
methods with :func:`method_colors`, so a method has the same colour in every figure.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable, Iterator, Mapping

from ..families import BUILTIN_FAMILIES

__all__ = ["FAMILY_SHADES", "method_colors", "use_families"]

FAMILY_SHADES: dict[str, tuple[str, ...]] = {
    "contrastive": ("#1f77b4", "#5aa9e6", "#17365d", "#3f6fb5", "#0b8fc7", "#8fb8e8"),
    "non-contrastive": ("#1b7837", "#4daf4a", "#7fbc41", "#00441b", "#2e8b57", "#9acd32"),
    "supervised": ("#d95f02", "#fd8d3c", "#a63603", "#f5a55a"),
    "baseline": ("#7f7f7f", "#4d4d4d", "#b0b0b0"),
    "unknown": ("#7b3294", "#c51b7d", "#9970ab", "#de77ae", "#542788"),
}

# The built-in methods' shades: their index in their family's tuple.
_BUILTIN_SHADE = {"simclr": 0, "supcon": 1, "mocov2": 2, "byol": 0, "simsiam": 1, "barlow_twins": 2, "vicreg": 3,
                  "supce": 0, "random": 0}

_run_families: dict[str, str] = {}  # method (lower case) -> family, of the report being built
_run_shades: dict[str, str] = {}  # method (lower case) -> colour, assigned in the run's order


def _family(method: str) -> str:
    return _run_families.get(method) or BUILTIN_FAMILIES.get(method, "unknown")


def _shade(method: str, family: str) -> str:
    shades = FAMILY_SHADES.get(family, FAMILY_SHADES["unknown"])
    if method in _BUILTIN_SHADE and BUILTIN_FAMILIES.get(method) == family:
        return shades[_BUILTIN_SHADE[method] % len(shades)]
    return shades[zlib.crc32(method.encode()) % len(shades)]


@contextlib.contextmanager
def use_families(families: Mapping[str, str]) -> Iterator[None]:
    """Colour the run's methods by ``families`` ({method: family}, in the run's order) while inside:
    external methods take their family's free shades in that order."""
    saved = dict(_run_families), dict(_run_shades)
    _run_families.clear()
    _run_shades.clear()
    _run_families.update({str(m).lower(): f for m, f in families.items()})
    taken: dict[str, set[str]] = {}
    for method, family in _run_families.items():  # built-ins first: their shades are fixed
        if method in _BUILTIN_SHADE and BUILTIN_FAMILIES.get(method) == family:
            _run_shades[method] = _shade(method, family)
            taken.setdefault(family, set()).add(_run_shades[method])
    for method, family in _run_families.items():
        if method not in _run_shades:
            shades = FAMILY_SHADES.get(family, FAMILY_SHADES["unknown"])
            free = [c for c in shades if c not in taken.get(family, set())] or list(shades)
            _run_shades[method] = free[0]
            taken.setdefault(family, set()).add(free[0])
    try:
        yield
    finally:
        _run_families.clear()
        _run_shades.clear()
        _run_families.update(saved[0])
        _run_shades.update(saved[1])


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """A hex colour per method name (matched case-insensitively), the same in every figure."""
    result: dict[str, str] = {}
    for method in methods:
        if method not in result:
            key = str(method).lower()
            colour = _run_shades.get(key) or _shade(key, _family(key))
            if key not in _run_shades and key not in _BUILTIN_SHADE and colour in result.values():
                shades = FAMILY_SHADES.get(_family(key), FAMILY_SHADES["unknown"])  # two names, one shade: the next
                colour = next((c for c in shades if c not in result.values()), colour)
            result[method] = colour
    return result
