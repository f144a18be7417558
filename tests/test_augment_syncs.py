"""No host syncs in make_views (both recipes) or contrastive_loss (SimCLR, SupCon with V = 2),
and the sync-free code gives exactly what the earlier row-selecting code gave.

The comparison is against frozen copies of the code before the change (nonzero row selection in
the colour jitter; boolean-mask indexing of the anchors in the loss), kept here verbatim in
behaviour, so the test keeps proving equality after the library moves on. Tolerance: exact
(torch.equal) for the views and for the loss values and gradients on the CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastlab import augment
from contrastlab.augment import colour_jitter, make_views, sample_jitter
from contrastlab.objectives import contrastive_loss
from contrastlab.utils.host_sync import HostSyncCounter


def old_colour_jitter(images, apply, factors, order):
    """The colour jitter before the change: each step on the rows it selects with nonzero."""
    out = images.clone()
    for position in range(4):
        for step, adjust in augment._COLOUR_STEPS.items():
            rows = (apply & (order[:, position] == step)).nonzero().squeeze(1)
            if len(rows):
                out[rows] = adjust(out[rows], factors[rows, step])
    return out


def old_contrastive_loss(features, labels, temperature, form):
    """The loss before the change: anchors without positives dropped by boolean-mask indexing."""
    n_samples, n_views, _ = features.shape
    z = F.normalize(features, dim=-1).reshape(n_samples * n_views, -1)
    keys = (torch.arange(n_samples) if labels is None else labels).repeat_interleave(n_views)
    logits = z @ z.T / temperature
    is_self = torch.eye(len(keys), dtype=torch.bool)
    log_prob = logits - logits.masked_fill(is_self, float("-inf")).logsumexp(dim=1, keepdim=True)
    positive = (keys[:, None] == keys[None, :]) & ~is_self
    n_positives = positive.sum(dim=1)
    has_positive = n_positives > 0
    log_prob, positive, n_positives = log_prob[has_positive], positive[has_positive], n_positives[has_positive]
    if form == "out":
        per_anchor = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1) / n_positives
    else:
        per_anchor = log_prob.masked_fill(~positive, float("-inf")).logsumexp(dim=1) - n_positives.to(log_prob.dtype).log()
    return -per_anchor.mean()


@pytest.mark.parametrize("channels", [1, 3])
def test_colour_jitter_equals_the_row_selecting_version(channels):
    generator = torch.Generator().manual_seed(channels)
    images = torch.rand(64, channels, 6, 5, generator=generator)
    apply, factors, order = sample_jitter(64, generator, jitter_p=0.7)
    assert torch.equal(colour_jitter(images, apply, factors, order), old_colour_jitter(images, apply, factors, order))


@pytest.mark.parametrize("recipe", ["contrastive", "supervised"])
def test_make_views_has_no_host_sync_and_equals_the_old_views(recipe, monkeypatch):
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with HostSyncCounter() as counter:
        views = make_views(images, recipe, 2, torch.Generator().manual_seed(5))
    assert counter.total == 0, dict(counter.counts)
    monkeypatch.setattr(augment, "colour_jitter", old_colour_jitter)
    assert torch.equal(views, make_views(images, recipe, 2, torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("form", ["out", "in"])
@pytest.mark.parametrize("supervised", [False, True])
def test_contrastive_loss_has_no_host_sync_and_equals_the_old_loss(supervised, form):
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(16, 2, 8, generator=generator, requires_grad=True)
    labels = torch.randint(0, 3, (16,), generator=generator) if supervised else None
    with HostSyncCounter() as counter:
        loss = contrastive_loss(features, labels, 0.1, form=form)
        (grad,) = torch.autograd.grad(loss, features)
    assert counter.total == 0, dict(counter.counts)
    old = old_contrastive_loss(features, labels, 0.1, form)
    (old_grad,) = torch.autograd.grad(old, features)
    assert torch.equal(loss, old) and torch.equal(grad, old_grad)


@pytest.mark.parametrize("form", ["out", "in"])
def test_single_view_supcon_weights_out_anchors_without_positives(form):
    # One view, label 2 on one row only: that anchor has no positive and weight 0, no NaN.
    features = torch.randn(6, 1, 4, generator=torch.Generator().manual_seed(3), requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    loss = contrastive_loss(features, labels, 0.2, form=form)
    (grad,) = torch.autograd.grad(loss, features)
    old = old_contrastive_loss(features, labels, 0.2, form)
    (old_grad,) = torch.autograd.grad(old, features)
    # Weighted sum / weight sum against the mean of the kept rows: equal to float round-off.
    torch.testing.assert_close(loss, old, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, old_grad, rtol=1e-6, atol=1e-7)
    assert torch.isfinite(grad).all()


def test_no_positive_is_still_an_error():
    with pytest.raises(ValueError, match="no anchor has a positive"):
        contrastive_loss(torch.randn(4, 1, 3))  # decided from the shape
    with pytest.raises(ValueError, match="no anchor has a positive"):
        contrastive_loss(torch.randn(4, 1, 3), torch.arange(4))  # one view, labels: a data check
