"""Pretraining objectives: the contrastive loss (SimCLR, SupCon) and cross-entropy (SupCE).

SimCLR and SupCon are one function, :func:`contrastive_loss`, that differs only in which rows
count as positives: the other views of the same sample (``labels=None``) or every other row
with the same label. The registry :data:`OBJECTIVES` describes, per method, which head it
trains, how many views and which augmentation recipe it uses, and gives all three one call
signature (:meth:`Objective.loss`), so the training loop never branches on the method name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import lookup

LOSS_FORMS = ("out", "in")


def contrastive_loss(
    features: Tensor,
    labels: Tensor | None = None,
    temperature: float = 0.07,
    base_temperature: float | None = None,
    form: str = "out",
) -> Tensor:
    """SupContrast's loss with contrast mode "all"; SimCLR when ``labels`` is None.

    ``features`` (N, V, D): N samples, V >= 1 views each; L2-normalized here. All N·V rows are
    anchors and all are contrasts. With z the normalized rows and s_ij = z_i·z_j / τ,

        log p_ij = s_ij − log Σ_{k≠i} exp(s_ik)

    and P(i) the positives of anchor i (never i itself): the other views of the same sample
    (``labels=None``), or every other row whose sample has the same label (``labels`` (N,)).

    - ``form="out"``: L = −(τ/τ_base) · mean_i [ (1/|P(i)|) Σ_{p∈P(i)} log p_ip ]
    - ``form="in"``:  L = −(τ/τ_base) · mean_i log [ (1/|P(i)|) Σ_{p∈P(i)} p_ip ]

    ``base_temperature=None`` means τ_base = τ. Anchors without a positive are left out of the
    mean; if no anchor has one, ValueError. Returns a scalar.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be (N, V, D), got shape {tuple(features.shape)}")
    if form not in LOSS_FORMS:
        raise ValueError(f"form must be one of {LOSS_FORMS}, got '{form}'")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    base_temperature = temperature if base_temperature is None else base_temperature
    precision = torch.promote_types(features.dtype, torch.float32)  # float64 stays float64
    with torch.autocast(features.device.type, enabled=False):  # logits at τ = 0.07 need float32, not bf16
        return _contrastive_loss_full_precision(features.to(precision), labels, temperature, base_temperature, form)


def _contrastive_loss_full_precision(
    features: Tensor, labels: Tensor | None, temperature: float, base_temperature: float, form: str
) -> Tensor:
    n_samples, n_views, _ = features.shape
    device = features.device
    z = F.normalize(features, dim=-1).reshape(n_samples * n_views, -1)  # sample-major rows
    if labels is None:
        keys = torch.arange(n_samples, device=device)
    else:
        if labels.shape != (n_samples,):
            raise ValueError(f"labels must be ({n_samples},), got shape {tuple(labels.shape)}")
        keys = labels.to(device)
    keys = keys.repeat_interleave(n_views)  # (N·V,) the key of each row

    logits = z @ z.T / temperature  # (N·V, N·V)
    is_self = torch.eye(len(keys), dtype=torch.bool, device=device)
    # The anchor is excluded from its own denominator; logsumexp keeps this stable at small τ.
    log_denominator = logits.masked_fill(is_self, float("-inf")).logsumexp(dim=1, keepdim=True)
    log_prob = logits - log_denominator  # finite everywhere, the diagonal included (it is never used)

    positive = (keys[:, None] == keys[None, :]) & ~is_self
    n_positives = positive.sum(dim=1)
    has_positive = n_positives > 0
    if not bool(has_positive.any()):
        raise ValueError("no anchor has a positive: SimCLR needs V >= 2 views, SupCon a label shared by two rows")
    # Only anchors with positives enter the loss (and the logsumexp below, whose gradient on an
    # all -inf row would be NaN).
    log_prob, positive, n_positives = log_prob[has_positive], positive[has_positive], n_positives[has_positive]

    if form == "out":
        per_anchor = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1) / n_positives
    else:
        per_anchor = log_prob.masked_fill(~positive, float("-inf")).logsumexp(dim=1) - n_positives.to(log_prob.dtype).log()
    return -(temperature / base_temperature) * per_anchor.mean()


def supervised_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over all N·V rows: ``logits`` (N, V, K), ``labels`` (N,) -> scalar."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be (N, V, K), got shape {tuple(logits.shape)}")
    n_samples, n_views, n_classes = logits.shape
    if labels.shape != (n_samples,):
        raise ValueError(f"labels must be ({n_samples},), got shape {tuple(labels.shape)}")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.reshape(n_samples * n_views, n_classes), labels.repeat_interleave(n_views))


def _simclr(outputs: Tensor, labels: Tensor | None, temperature: float, base_temperature: float | None, form: str) -> Tensor:
    return contrastive_loss(outputs, None, temperature, base_temperature, form)


def _supcon(outputs: Tensor, labels: Tensor | None, temperature: float, base_temperature: float | None, form: str) -> Tensor:
    return contrastive_loss(outputs, labels, temperature, base_temperature, form)


def _supce(outputs: Tensor, labels: Tensor | None, temperature: float, base_temperature: float | None, form: str) -> Tensor:
    return supervised_cross_entropy(outputs, labels)


@dataclass(frozen=True)
class Objective:
    """What a pretraining method needs from the training loop.

    ``head``: "projection" (L2-normalized embedding) or "classifier" (logits).
    ``views``: views per sample (2 for the contrastive methods, 1 for SupCE).
    ``augmentation``: the recipe name for :func:`contrastlab.augment.make_views`.
    """

    name: str
    head: str
    views: int
    augmentation: str
    needs_labels: bool
    criterion: Callable[[Tensor, Tensor | None, float, float | None, str], Tensor] = field(repr=False)

    def loss(
        self,
        outputs: Tensor,
        labels: Tensor | None = None,
        temperature: float = 0.07,
        base_temperature: float | None = None,
        form: str = "out",
    ) -> Tensor:
        """Scalar loss of ``outputs`` (N, V, D or K) with ``labels`` (N,); one signature for all
        methods (SimCLR ignores the labels, SupCE the temperatures and the form)."""
        if self.needs_labels and labels is None:
            raise ValueError(f"objective '{self.name}' needs labels")
        return self.criterion(outputs, labels, temperature, base_temperature, form)


OBJECTIVES: dict[str, Objective] = {
    "simclr": Objective("simclr", "projection", 2, "contrastive", False, _simclr),
    "supcon": Objective("supcon", "projection", 2, "contrastive", True, _supcon),
    "supce": Objective("supce", "classifier", 1, "supervised", True, _supce),
}


def get_objective(name: str) -> Objective:
    """The registered objective ``name``; the error lists the valid names."""
    return lookup(OBJECTIVES, name, "objective")
