"""Pretraining stage: one encoder (SimCLR, SupCon, SupCE, or the random-init baseline)."""

from __future__ import annotations

from ...train.pretrain import pretrain, random_encoder
from ..context import StageContext
from ..inputs import pretrain_set
from ..plan import RANDOM


def run(ctx: StageContext) -> None:
    config, unit = ctx.config, ctx.unit
    data = pretrain_set(config.data)
    m = config.model
    if unit.method == RANDOM:
        random_encoder(data, ctx.folder / "encoder.safetensors", seed=unit.seed, encoder=m.encoder, width=m.width, record=ctx.record)
        return
    p = ctx.settings
    pretrain(
        data, ctx.folder, method=unit.method, seed=unit.seed, encoder=m.encoder, width=m.width,
        projection_dim=m.projection_dim, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr[unit.method],
        momentum=p.momentum, weight_decay=p.weight_decay, min_lr_ratio=p.min_lr_ratio, warmup_epochs=p.warmup_epochs,
        temperature=p.temperature.get(unit.method), base_temperature=p.base_temperature, loss_form=p.loss_form, views=p.views,
        crop_scale_min=p.crop_scale_min, checkpoint_epochs=p.checkpoint_epochs, checkpoint_every=p.checkpoint_every,
        sync_bn=p.sync_bn, device=ctx.device, precision=ctx.precision, record=ctx.record, progress=ctx.progress,
    )
