"""Pretraining objectives: the contrastive loss (SimCLR, SupCon), cross-entropy (SupCE) and the
tensor-in losses of BYOL, SimSiam, Barlow Twins, VICReg and MoCo v2.

SimCLR and SupCon are one function, :func:`contrastive_loss`, that differs only in which rows
count as positives: the other views of the same sample (``labels=None``) or every other row
with the same label. Which method trains which loss, with which head, views and augmentation,
is :data:`contrastlab.train.methods.METHODS`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
    mean (weight 0; only possible with V == 1 and labels); if no anchor has one, ValueError.
    No host sync for V >= 2 (every pretraining step); V == 1 with labels reads one flag back to
    decide that error. Returns a scalar.
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
    _check_some_anchor_has_positive(n_views, labels, n_positives)
    # Anchors without a positive (possible only with one view and labels) get weight 0: weighted
    # means instead of boolean-mask indexing keep the step free of host syncs. With V >= 2 every
    # weight is 1 and the result is bit-identical to indexing the rows out.
    has_positive = n_positives > 0
    weight = has_positive.to(log_prob.dtype)
    if form == "out":
        per_anchor = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1) / n_positives.clamp_min(1)
    else:
        # A row without positives gets zeros instead of -inf (a finite logsumexp whose gradient,
        # times weight 0, is 0 rather than NaN).
        fill = torch.where(has_positive, float("-inf"), 0.0).to(log_prob.dtype)[:, None]
        per_anchor = torch.where(positive, log_prob, fill).logsumexp(dim=1) - n_positives.clamp_min(1).to(log_prob.dtype).log()
    return -(temperature / base_temperature) * (per_anchor * weight).sum() / weight.sum()


def _check_some_anchor_has_positive(n_views: int, labels: Tensor | None, n_positives: Tensor) -> None:
    """ValueError when no anchor has a positive. With V >= 2 every anchor has one (its other views)
    and with V == 1 and no labels none has: both decided from shapes. Only V == 1 with labels
    (SupCon on single views, never a pretraining step, which uses V >= 2) reads the data back."""
    message = "no anchor has a positive: SimCLR needs V >= 2 views, SupCon a label shared by two rows"
    if n_views >= 2:
        return
    if labels is None or not bool((n_positives > 0).any()):
        raise ValueError(message)


def supervised_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over all N·V rows: ``logits`` (N, V, K), ``labels`` (N,) -> scalar."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be (N, V, K), got shape {tuple(logits.shape)}")
    n_samples, n_views, n_classes = logits.shape
    if labels.shape != (n_samples,):
        raise ValueError(f"labels must be ({n_samples},), got shape {tuple(labels.shape)}")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.reshape(n_samples * n_views, n_classes), labels.repeat_interleave(n_views))


def _full_precision(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 at least (float64 stays float64)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _check_pair(first: str, a: Tensor, second: str, b: Tensor, min_rows: int = 1) -> None:
    """Both (N, D) with the same shape and N >= ``min_rows``; shapes only, never data."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{first} and {second} must both be (N, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{first} and {second} need at least {min_rows} rows (the batch statistics), got {a.shape[0]}")


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression loss of one view pair: ``p`` (N, D) predictions, ``z`` (N, D) targets.

        L = mean_n [ 2 − 2·cos(p_n, sg(z_n)) ]

    ``z`` is detached here (the target network gets no gradient). The symmetrized loss over two
    views is the caller's: ``byol_loss(p1, z2) + byol_loss(p2, z1)`` (solo-learn sums both
    directions). Float32 at least, autocast off. Returns a scalar.
    """
    _check_pair("p", p, "z", z)
    with torch.autocast(p.device.type, enabled=False):
        cosine = F.cosine_similarity(_full_precision(p), _full_precision(z.detach()), dim=-1)
        return (2 - 2 * cosine).mean()


def simsiam_loss(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's loss of one view pair: ``p`` (N, D) predictions, ``z`` (N, D) projections.

        L = −mean_n cos(p_n, sg(z_n))

    ``z`` is detached here (the stop-gradient). The symmetrized loss is the caller's:
    ``(simsiam_loss(p1, z2) + simsiam_loss(p2, z1)) / 2``. Float32 at least, autocast off.
    """
    _check_pair("p", p, "z", z)
    with torch.autocast(p.device.type, enabled=False):
        return -F.cosine_similarity(_full_precision(p), _full_precision(z.detach()), dim=-1).mean()


def _off_diagonal_mask(square: Tensor) -> Tensor:
    """1 off the diagonal, 0 on it, like ``square`` (D, D): a product, not boolean indexing (no host sync)."""
    return 1 - torch.eye(square.shape[0], dtype=square.dtype, device=square.device)


BATCHNORM_EPS = 1e-5  # BatchNorm1d's default eps, inside the square root


def _standardize(z: Tensor) -> Tensor:
    """(N, D) -> each column with mean 0 and unit biased std over the batch:
    (z − mean) / sqrt(var_biased + 1e-5), as BatchNorm1d(affine=False) in train mode."""
    centred = z - z.mean(dim=0, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(dim=0, keepdim=True) + BATCHNORM_EPS)


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 0.0051, scale: float = 0.1) -> Tensor:
    """Barlow Twins' redundancy-reduction loss: ``z1``, ``z2`` (N, D) projections of two views.

    Each view is standardized per dimension over the batch (z̃ = (z − mean)/sqrt(var + 1e-5),
    biased var, as BatchNorm1d(affine=False) in train mode), then C = z̃1ᵀ z̃2 / N (D, D) and

        L = scale · ( Σ_i (1 − C_ii)² + λ · Σ_{i≠j} C_ij² )

    Under DDP pass the gathered global batch, so C is the global batch's. Needs N >= 2.
    """
    _check_pair("z1", z1, "z2", z2, min_rows=2)
    with torch.autocast(z1.device.type, enabled=False):
        z1n, z2n = _standardize(_full_precision(z1)), _standardize(_full_precision(z2))
        correlation = z1n.T @ z2n / z1.shape[0]  # (D, D)
        on_diagonal = (1 - torch.diagonal(correlation)).pow(2).sum()
        off_diagonal = (correlation * _off_diagonal_mask(correlation)).pow(2).sum()
        return scale * (on_diagonal + lambd * off_diagonal)


VICREG_EPS = 1e-4  # inside the square root of the variance term


def _variance_term(z: Tensor) -> Tensor:
    """mean_d relu(1 − sqrt(var_d + 1e-4)), unbiased variance over the batch; ``z`` (N, D)."""
    return F.relu(1 - torch.sqrt(z.var(dim=0, correction=1) + VICREG_EPS)).mean()


def _covariance_term(z: Tensor) -> Tensor:
    """Σ_{i≠j} Cov_ij² / D with the unbiased covariance over the batch; ``z`` (N, D)."""
    n_rows, dim = z.shape
    centred = z - z.mean(dim=0, keepdim=True)
    covariance = centred.T @ centred / (n_rows - 1)  # (D, D)
    return (covariance * _off_diagonal_mask(covariance)).pow(2).sum() / dim


def vicreg_loss(z1: Tensor, z2: Tensor, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0) -> Tensor:
    """VICReg's loss: ``z1``, ``z2`` (N, D) projections of two views.

    - invariance s = mean over all N·D elements of (z1 − z2)²;
    - variance v = Σ_{views} mean_d relu(1 − sqrt(Var_d + 1e-4)), Var unbiased over the batch;
    - covariance c = Σ_{views} Σ_{i≠j} Cov_ij² / D, Cov the unbiased (D, D) covariance;

        L = sim_weight·s + var_weight·v + cov_weight·c

    Under DDP pass the gathered global batch, so the statistics are the global batch's. Needs N >= 2.
    """
    _check_pair("z1", z1, "z2", z2, min_rows=2)
    with torch.autocast(z1.device.type, enabled=False):
        z1, z2 = _full_precision(z1), _full_precision(z2)
        invariance = F.mse_loss(z1, z2)
        variance = _variance_term(z1) + _variance_term(z2)
        covariance = _covariance_term(z1) + _covariance_term(z2)
        return sim_weight * invariance + var_weight * variance + cov_weight * covariance


def moco_loss(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo's InfoNCE: queries ``q`` (N, D), keys ``k`` (N, D), a ``queue`` (K, D) of negatives.

    q and k are L2-normalized here and k is detached (the key encoder gets no gradient); the
    queue's rows are stored keys, already normalized, used as they are (detached). With
    logits = [q_n·k_n, q_n·queueᵀ] / T, (N, 1 + K),

        L = mean_n CE(logits_n, 0) = −mean_n log softmax(logits_n)_0
    """
    _check_pair("q", q, "k", k)
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, {q.shape[1]}), got shape {tuple(queue.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    with torch.autocast(q.device.type, enabled=False):
        q = F.normalize(_full_precision(q), dim=1)
        k = F.normalize(_full_precision(k.detach()), dim=1)
        positive = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
        negative = q @ queue.detach().to(q.dtype).T  # (N, K)
        logits = torch.cat([positive, negative], dim=1) / temperature
        target = torch.zeros(len(q), dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target)
