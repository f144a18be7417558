"""Pretraining stage: one encoder (a method of contrastlab.train.methods, or the random-init baseline)."""

from __future__ import annotations

import dataclasses

from ...config import PretrainConfig
from ...data import ImageSet
from ...models.normalization import ORIGINAL_STD
from ...rundir import ENCODER
from ...train.pretrain import Pretrainer, RunSpec, random_encoder
from ..context import StageContext
from ..curves import epoch_scalars
from ..inputs import pretrain_set
from ..plan import RANDOM


def normalized_set(data: ImageSet, p: PretrainConfig) -> ImageSet:
    """The pretraining set with the statistics its encoder normalizes with: the data's own, or
    (``pretrain.normalization=original``) its mean with the original's hard-coded std."""
    if p.normalization == "original":
        if len(data.std) != len(ORIGINAL_STD):
            raise ValueError(f"pretrain.normalization=original needs 3-channel data, {data.name} has {len(data.std)} channel(s)")
        return dataclasses.replace(data, std=ORIGINAL_STD)
    return data


def run(ctx: StageContext) -> None:
    config, unit = ctx.config, ctx.unit
    data = normalized_set(pretrain_set(config.data), config.pretrain)
    m = config.model
    if unit.method == RANDOM:
        random_encoder(data, ctx.folder / ENCODER, seed=unit.seed, encoder=m.encoder, width=m.width, record=ctx.record,
                       stem=m.stem)
        return
    with epoch_scalars(ctx, "pretrain") as on_epoch:  # TensorBoard scalars when log.tensorboard is on
        spec = RunSpec(unit.method, unit.seed, record=ctx.record, progress=ctx.progress, on_epoch=on_epoch)
        Pretrainer(ctx.settings, m, ctx.device, ctx.precision).run(data, ctx.folder, spec)
