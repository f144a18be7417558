"""One lookup for every registry (datasets, encoders, objectives, attacks, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from .errors import ContrastlabError

T = TypeVar("T")


class UnknownNameError(ContrastlabError, KeyError):
    """A name that is not in a registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """Return ``registry[name]`` or raise an error that names ``kind`` and the valid choices."""
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(sorted(registry))
        raise UnknownNameError(f"unknown {kind} '{name}'; valid: {valid}") from None
