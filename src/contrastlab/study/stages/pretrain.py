"""Pretraining stage: one encoder (SimCLR, SupCon, SupCE, or the random-init baseline)."""

from __future__ import annotations

import dataclasses

from ...config import PretrainConfig
from ...data import ImageSet
from ...models.normalization import ORIGINAL_STD
from ...train.pretrain import pretrain, random_encoder
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
        random_encoder(data, ctx.folder / "encoder.safetensors", seed=unit.seed, encoder=m.encoder, width=m.width, record=ctx.record,
                       stem=m.stem)
        return
    p = ctx.settings
    with epoch_scalars(ctx, "pretrain") as on_epoch:  # TensorBoard scalars when log.tensorboard is on
        pretrain(
            data, ctx.folder, method=unit.method, seed=unit.seed, encoder=m.encoder, width=m.width, stem=m.stem,
            projection_dim=m.projection_dim, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr[unit.method],
            momentum=p.momentum, weight_decay=p.weight_decay, min_lr_ratio=p.min_lr_ratio, warmup_epochs=p.warmup_epochs,
            reach_min_at_last=p.schedule_end == "at_min",
            temperature=p.temperature.get(unit.method), base_temperature=p.base_temperature, loss_form=p.loss_form, views=p.views,
            crop_scale_min=p.crop_scale_min, checkpoint_epochs=p.checkpoint_epochs, checkpoint_every=p.checkpoint_every,
            sync_bn=p.sync_bn, compile=p.compile, device=ctx.device, precision=ctx.precision, record=ctx.record, progress=ctx.progress,
            on_epoch=on_epoch,
        )
