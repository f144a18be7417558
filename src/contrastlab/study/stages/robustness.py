"""Robustness stage: FGSM / PGD accuracy and loss against ε (Fig. 2b)."""

from __future__ import annotations

import numpy as np
import torch

from ... import rundir
from ...analysis.attacks import SPACES, robust_accuracy
from ...config import RobustnessConfig
from ...utils.io import write_csv, write_json
from ..context import StageContext
from ..inputs import probe_and_data


def robustness_curves(ctx: StageContext, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, meta: dict) -> None:
    """Write ``<attack>.csv`` (eps, eps_255, accuracy, loss) per attack and ``robustness.json`` into the unit's folder;
    with ``compare_spaces``, also ``fgsm_<other space>.csv`` (FGSM with ε applied in the other space)."""
    s: RobustnessConfig = ctx.settings
    batch_size = ctx.batch_size(s.batch_size)
    eps = np.asarray(s.eps_255, dtype=np.float64) / 255
    runs = [(attack, s.space, rundir.attack_file(attack)) for attack in s.attacks]
    other = next(x for x in SPACES if x != s.space)
    if s.compare_spaces and "fgsm" in s.attacks:
        runs.append(("fgsm", other, rundir.attack_file("fgsm", other)))
    for attack, space, name in runs:
        kwargs = {"space": space, "precision": ctx.precision}
        if attack == "pgd":
            kwargs.update(steps=s.pgd_steps, seed=s.seed)
        curve = robust_accuracy(model, images, labels, eps, attack=attack, batch_size=batch_size, progress=ctx.progress, **kwargs)
        rows = [{"eps": f"{e:.8f}", "eps_255": f"{e * 255:g}", "accuracy": f"{acc:.6f}", "loss": f"{loss:.6f}"}
                for e, acc, loss in zip(eps, curve.accuracy, curve.loss)]
        write_csv(ctx.folder / name, rows)
    write_json(ctx.folder / rundir.ROBUSTNESS, {
        **meta, "kind": "robustness", "attacks": list(s.attacks), "space": s.space, "pgd_steps": s.pgd_steps,
        "eps_255": list(s.eps_255), "precision": ctx.precision,
        "compared_space": other if len(runs) > len(s.attacks) else None,
    })


def run(ctx: StageContext) -> None:
    model, images, labels, meta = probe_and_data(ctx, ctx.settings.samples)
    robustness_curves(ctx, model, images, labels, meta)
