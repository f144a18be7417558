"""The study's stages: one function per unit kind, each ``run(ctx: StageContext) -> None``.

A stage reads its inputs (``ctx.inputs``, files of upstream units), places its model and data on
``ctx.device``, calls the kernels with plain arguments taken from its config section
(``ctx.settings``, the one source of defaults), and writes only into ``ctx.folder``. The study
runner and the single-stage CLI commands run the same functions.
"""

from __future__ import annotations

from collections.abc import Callable

from ..context import StageContext
from . import alignment, finetune, geometry, landscape, pretrain, representation, robustness, sharpness, trajectory

STAGES: dict[str, Callable[[StageContext], None]] = {
    "pretrain": pretrain.run,
    "finetune": finetune.run,
    "landscape": landscape.run,
    "sharpness": sharpness.run,
    "robustness": robustness.run,
    "geometry": geometry.run,
    "trajectory": trajectory.run,
    "representation": representation.run,
    "alignment": alignment.run,
}
