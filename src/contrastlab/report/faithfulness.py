"""The original study's behaviours that a run can switch on, and which ones a run used.

One row per behaviour: its config key, the corrected (default) value and the original code's
value. docs/design-notes.md says which file and line of the original each one follows. The
provenance section shows the table; a run made with preset ``faithful`` uses every one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Behaviour:
    key: str  # dotted config key
    what: str
    corrected: Any
    original: Any


BEHAVIOURS = (
    Behaviour("precision", "numeric precision", "auto", "fp32"),
    Behaviour("pretrain.normalization", "pretraining input normalization", "dataset", "original"),
    Behaviour("pretrain.schedule_end", "pretraining cosine schedule end", "before_min", "at_min"),
    Behaviour("pretrain.loss_form", "contrastive loss form", "out", "out"),
    Behaviour("finetune.normalization", "probe and analysis input normalization", "pretrain", "downstream"),
    Behaviour("finetune.schedule_end", "probe cosine schedule end", "before_min", "at_min"),
    Behaviour("finetune.weight_decay", "probe weight decay (the paper's text: 1e-4)", 0.0, 0.0),
    Behaviour("analysis.robustness.space", "space of the FGSM budget", "pixel", "normalized"),
    Behaviour("analysis.geometry.raw_probabilities", "t_w with raw p (reported alongside √p, never instead)", True, True),
    Behaviour("analysis.geometry.truth_copies", "P* points in the InPCA map", "one", "per_seed"),
    Behaviour("analysis.landscape.direction_seed", "landscape direction seeding", "shared", "per_model"),
    Behaviour("analysis.landscape.ignore", "landscape directions on biases and BN", "biasbn", "biasbn"),
    Behaviour("analysis.landscape.normalization", "landscape direction normalization", "filter", "filter"),
)

NOT_RECORDED = object()


def config_value(config: dict, key: str) -> Any:
    """The value of a dotted key in a plain config dict; NOT_RECORDED when absent (an older run)."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return NOT_RECORDED
        node = node[part]
    return node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


def behaviour_rows(config: dict) -> list[dict]:
    """One row per behaviour: key, what, this run's value, corrected and original values, and
    whether the run used the original behaviour ("yes", "no", or "same" where both agree)."""
    rows = []
    for b in BEHAVIOURS:
        value = config_value(config, b.key)
        recorded = value is not NOT_RECORDED
        shown = value if recorded else b.corrected  # a run of an older version had the corrected behaviour
        if _same(b.corrected, b.original):
            used = "same"
        else:
            used = "yes" if _same(shown, b.original) else "no"
        rows.append({"behaviour": b.what, "key": b.key, "this run": str(shown) + ("" if recorded else " (not recorded)"),
                     "corrected": str(b.corrected), "original": str(b.original), "original used": used})
    return rows


def originals_used(config: dict) -> list[str]:
    """The keys whose original behaviour (differing from the corrected one) the run used."""
    return [r["key"] for r in behaviour_rows(config) if r["original used"] == "yes"]
