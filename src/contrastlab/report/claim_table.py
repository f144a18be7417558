"""Every claim of a run in one table, decided together: the paper's (claims.py) and, when the run
names method families, the families' (family_claims.py), with one multiplicity adjustment over all."""

from __future__ import annotations

from dataclasses import asdict

from .claims import ClaimInputs, ClaimSettings, decide_together, paper_claims
from .family_claims import family_claims

__all__ = ["claims_rows"]


def claims_rows(inputs: ClaimInputs | None = None, settings: ClaimSettings | None = None) -> list[dict]:
    """Every claim's rows as dicts (the :class:`~.claims.Claim` fields, in order) for a CSV or HTML
    table, decided together (:func:`~.claims.decide_together`, ``settings.adjust``) at ``settings.alpha``:
    the paper's claims, then the families' when ``inputs.families`` is given."""
    inputs, settings = inputs or ClaimInputs(), settings or ClaimSettings()
    rows = paper_claims(inputs, settings)
    if inputs.families:
        rows += family_claims(inputs, settings)
    rows = decide_together(rows, alpha=settings.alpha, own_alpha=1.0 - settings.confidence, adjust=settings.adjust,
                           earlier=settings.earlier)
    return [asdict(r) for r in rows]
