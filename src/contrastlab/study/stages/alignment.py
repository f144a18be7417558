"""Alignment stage (beyond the paper): alignment, uniformity and effective rank of one encoder.

On ``pairs`` images of the pretraining data (drawn with ``seed``), each augmented twice with the
contrastive recipe (the same crops, flips and jitter for every encoder of the study), the
encoder's features are L2-normalized; alignment (Wang & Isola: mean ‖z − z'‖², lower = positives
closer), uniformity (log mean exp(−2‖z_i − z_j‖²) over each view's pairs, averaged over the two
views; lower = more uniform) and the effective rank of the un-augmented images' features
(higher = more directions used). Writes ``alignment.json``.
"""

from __future__ import annotations

import torch

from ... import rundir
from ...analysis.representation import alignment, effective_rank, uniformity
from ...augment import make_views
from ...train.finetune import extract_features
from ...utils.io import write_json
from ..context import StageContext
from ..encoders import load_encoder
from ..inputs import pretrain_set

RECIPE = "contrastive"  # SimCLR's and SupCon's augmentation: the pairs contrastive methods are trained to align


@torch.inference_mode()
def augmented_pairs(images: torch.Tensor, pairs: int, seed: int, crop_scale_min: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (n,), views (n, 2, C, H, W) float in [0, 1]) of ``pairs`` images drawn with ``seed``, on the images' device."""
    generator = torch.Generator(device=images.device).manual_seed(seed)
    chosen = torch.randperm(len(images), generator=generator, device=images.device)[:pairs]
    views = make_views(images[chosen], RECIPE, 2, generator, size=images.shape[-1], crop_scale=(crop_scale_min, 1.0))
    return chosen, views


def run(ctx: StageContext) -> None:
    s = ctx.settings
    data = pretrain_set(ctx.config.data)
    encoder, meta = load_encoder(ctx.input("encoder"))
    encoder.eval().to(ctx.device)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()
    chosen, views = augmented_pairs(images, s.pairs, s.seed, ctx.config.pretrain.crop_scale_min)  # CPU: the same views everywhere
    with torch.inference_mode():
        z = torch.cat([encoder(v.to(ctx.device)).float().cpu() for v in views.flatten(0, 1).split(512)]).view(len(chosen), 2, -1)
    clean = extract_features(encoder, data.images[chosen.numpy()], device=ctx.device)
    write_json(ctx.folder / rundir.ALIGNMENT, {
        **ctx.record, "kind": "alignment", "method": meta.get("method"), "seed": meta.get("seed"),
        "alignment": alignment(z[:, 0], z[:, 1]),
        "uniformity": (uniformity(z[:, 0]) + uniformity(z[:, 1])) / 2,
        "effective_rank": effective_rank(clean), "feature_dim": int(clean.shape[1]),
        "pairs": len(chosen), "augmentation": RECIPE, "crop_scale_min": ctx.config.pretrain.crop_scale_min, "pair_seed": s.seed,
        "dataset": data.name,
    })
