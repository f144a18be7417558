"""Representation similarity and geometry: linear CKA, alignment, uniformity, effective rank.

All functions take features of the same N samples as numpy arrays or torch tensors (any
device, any float dtype), compute in float64 and return Python floats.

* Linear CKA (Kornblith et al., ICML 2019). With column-centred X (N, D1) and Y (N, D2),

      CKA(X, Y) = ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F),

  i.e. HSIC(K, L) / √(HSIC(K, K) HSIC(L, L)) with K = XXᵀ, L = YYᵀ and the biased estimator
  HSIC = tr(KHLH)/(N−1)² (H = I − 11ᵀ/N; the (N−1)² cancels). The debiased variant replaces
  HSIC by the unbiased estimator of Song et al. (JMLR 2012), as used by Nguyen et al. (ICLR
  2021): with K̃, L̃ the Gram matrices with their diagonals set to zero,

      HSIC_u = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((N−1)(N−2)) − 2/(N−2)·1ᵀK̃L̃1] / (N(N−3)).

  Both are evaluated in feature space (no N×N matrix unless N is the smaller side), so N can
  be large. CKA is invariant to orthogonal maps and isotropic scaling of either argument.
* Alignment and uniformity (Wang & Isola, ICML 2020) of L2-normalized rows.
* Effective rank (Roy & Vetterli, EUSIPCO 2007): exp of the Shannon entropy of the singular
  values of the centred features, normalized to sum to 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

# Float64 entries per block of the pairwise uniformity computation (32 MB).
_PAIR_BLOCK_ELEMENTS = 1 << 22


def _features(x: object, name: str, flatten: bool = True) -> torch.Tensor:
    """``x`` as a float64 torch tensor of shape (N, D); trailing axes are flattened when allowed."""
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
        t = x.detach()
        if t.device.type == "mps":  # no float64 there
            t = t.cpu()
        t = t.to(torch.float64)
    else:
        array = np.asarray(x)
        if array.dtype.kind not in "fiu":
            raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
        t = torch.from_numpy(np.array(array, dtype=np.float64))  # a writable contiguous copy
    if t.ndim < 2 or (t.ndim > 2 and not flatten):
        want = "(N, D) or (N, ...)" if flatten else "(N, D)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    t = t.reshape(t.shape[0], -1)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    return t


def _same_samples(x: torch.Tensor, y: torch.Tensor, names: tuple[str, str]) -> torch.Tensor:
    """``y`` on ``x``'s device after checking both describe the same number of samples."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]} must describe the same samples: {x.shape[0]} vs {y.shape[0]} rows")
    return y.to(x.device)


class _Prepared(NamedTuple):
    """Column-centred features and the terms of the HSIC estimators that depend on one side only."""

    centred: torch.Tensor  # (N, D)
    diag: torch.Tensor  # (N,) ‖x_i‖², the Gram diagonal
    offdiag_rowsums: torch.Tensor  # (N,) K̃1 = X Xᵀ1 − diag
    offdiag_total: float  # 1ᵀK̃1


def _prepare(x: torch.Tensor) -> _Prepared:
    xc = x - x.mean(dim=0, keepdim=True)
    diag = xc.square().sum(dim=1)
    column_sums = xc.sum(dim=0)  # zero up to rounding; kept so the estimator matches its formula
    rowsums = xc @ column_sums - diag
    return _Prepared(xc, diag, rowsums, float(column_sums.square().sum() - diag.sum()))


def _gram_inner(x: torch.Tensor, y: torch.Tensor) -> float:
    """tr(XXᵀ YYᵀ) = ‖XᵀY‖_F², by whichever of the two products is cheaper."""
    n, d1, d2 = x.shape[0], x.shape[1], y.shape[1]
    if d1 * d2 <= n * (d1 + d2):
        return float((x.T @ y).square().sum())
    return float(((x @ x.T) * (y @ y.T)).sum())


def _hsic(a: _Prepared, b: _Prepared, debiased: bool) -> float:
    """HSIC of two prepared feature sets, up to the factor shared by all pairs (biased) or exactly (debiased)."""
    cross = _gram_inner(a.centred, b.centred)
    if not debiased:
        return cross
    n = a.centred.shape[0]
    trace = cross - float(a.diag @ b.diag)
    total = a.offdiag_total * b.offdiag_total / ((n - 1) * (n - 2))
    rows = 2.0 / (n - 2) * float(a.offdiag_rowsums @ b.offdiag_rowsums)
    return (trace + total - rows) / (n * (n - 3))


def _cka(a: _Prepared, b: _Prepared, hsic_aa: float, hsic_bb: float, debiased: bool) -> float:
    denominator = hsic_aa * hsic_bb
    if not denominator > 0:  # constant features (or a non-positive unbiased estimate): undefined
        return math.nan
    return _hsic(a, b, debiased) / math.sqrt(denominator)


def _check_samples(n: int, debiased: bool) -> None:
    if n < (4 if debiased else 2):
        need = "4 (debiased)" if debiased else "2"
        raise ValueError(f"CKA needs at least {need} samples, got {n}")


def linear_cka(X: object, Y: object, debiased: bool = False) -> float:
    """Linear CKA between two feature sets of the same samples.

    X: (N, D1), Y: (N, D2) (trailing axes beyond the second are flattened), numpy or torch.
    debiased: use the unbiased HSIC estimator (needs N ≥ 4); it can be slightly negative for
        unrelated features and small N.
    Returns a float in [0, 1] (biased); NaN when either side is constant across samples.
    """
    x = _features(X, "X")
    y = _same_samples(x, _features(Y, "Y"), ("X", "Y"))
    _check_samples(x.shape[0], debiased)
    a, b = _prepare(x), _prepare(y)
    return _cka(a, b, _hsic(a, a, debiased), _hsic(b, b, debiased), debiased)


def cka_matrix(features: Mapping[str, object], debiased: bool = False) -> tuple[list[str], np.ndarray]:
    """Linear CKA between every pair of named feature sets of the same N samples.

    features: name -> (N, D_name) array or tensor (e.g. one encoder per method, or one layer per name).
    Returns (names in the mapping's order, (K, K) float64 symmetric matrix with CKA[i, j]).
    """
    names = list(features)
    if not names:
        raise ValueError("features is empty: give at least one named feature set")
    tensors = [_features(features[k], f"features[{k!r}]") for k in names]
    for k, t in zip(names[1:], tensors[1:]):
        _same_samples(tensors[0], t, (f"features[{names[0]!r}]", f"features[{k!r}]"))
    _check_samples(tensors[0].shape[0], debiased)
    prepared = [_prepare(t.to(tensors[0].device)) for t in tensors]
    self_hsic = [_hsic(p, p, debiased) for p in prepared]
    matrix = np.empty((len(names), len(names)))
    for i in range(len(names)):
        for j in range(i, len(names)):
            matrix[i, j] = matrix[j, i] = _cka(prepared[i], prepared[j], self_hsic[i], self_hsic[j], debiased)
    return names, matrix


def alignment(z1: object, z2: object, alpha: float = 2.0) -> float:
    """Mean over i of ‖ẑ1_i − ẑ2_i‖₂^α, rows L2-normalized first (lower: positives closer).

    z1, z2: (N, D) embeddings of two views of the same N samples. alpha > 0.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    a = _features(z1, "z1", flatten=False)
    b = _same_samples(a, _features(z2, "z2", flatten=False), ("z1", "z2"))
    distances = (F.normalize(a, dim=1) - F.normalize(b, dim=1)).norm(dim=1)
    return float(distances.pow(alpha).mean())


def uniformity(z: object, t: float = 2.0) -> float:
    """log of the mean over pairs i < j of exp(−t ‖ẑ_i − ẑ_j‖²), rows L2-normalized (lower: more uniform).

    z: (N, D) embeddings, N ≥ 2. t > 0. Evaluated as a log-sum-exp over blocks of rows, so memory
    stays bounded for large N. For unit vectors the value lies in [−4t, 0].
    """
    if not t > 0:
        raise ValueError(f"t must be positive, got {t}")
    u = F.normalize(_features(z, "z", flatten=False), dim=1)
    n = u.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 samples, got {n}")
    rows = max(1, _PAIR_BLOCK_ELEMENTS // n)
    partial = []
    for start in range(0, n - 1, rows):
        stop = min(start + rows, n - 1)
        # ‖u_i − u_j‖² = 2 − 2 u_i·u_j for unit rows; clamped against rounding below 0
        squared = (2.0 - 2.0 * u[start:stop] @ u[start + 1:].T).clamp_min(0.0)
        i = torch.arange(start, stop, device=u.device)[:, None]
        j = torch.arange(start + 1, n, device=u.device)[None, :]
        exponent = (-t * squared).masked_fill(j <= i, -math.inf)  # keep pairs i < j only
        partial.append(torch.logsumexp(exponent.flatten(), dim=0))
    total = torch.logsumexp(torch.stack(partial), dim=0)
    return float(total) - math.log(n * (n - 1) / 2)


def effective_rank(X: object, center: bool = True) -> float:
    """exp(H(p)) with p_k = σ_k / Σσ the normalized singular values of the (centred) features.

    X: (N, D) features (trailing axes flattened). Ranges from 1 (one direction) to min(N, D)
    (all singular values equal); 0.0 for features that are all equal (centred) or all zero.
    """
    x = _features(X, "X")
    scale = float(x.norm())
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    singular = torch.linalg.svdvals(x)
    total = singular.sum()
    # equal rows leave only rounding noise after centring: that is rank 0, not a spread of noise
    if not float(singular.max()) > 1e-12 * scale:
        return 0.0
    p = singular / total
    p = p[p > 0]  # 0 log 0 = 0
    return math.exp(float(-(p * p.log()).sum()))


__all__ = ["linear_cka", "cka_matrix", "alignment", "uniformity", "effective_rank"]
