"""Progress of a model along the geodesic from "knows nothing" to "truth" (Ramesh et al., 2022).

A model's predictions on N samples with C classes are P_w ∈ (N, C). Taking the square root of
each row maps it onto the positive orthant of a unit sphere, and the model onto a product of N
spheres. On it:

* the Bhattacharyya distance d_B(P, Q) = −(1/N) Σ_n log Σ_c √(p[n,c] q[n,c]);
* the geodesic between two models is, per sample, the great-circle arc (slerp) between √p and √q;
* P0 (uniform over C) and P* (one-hot truth) are joined by such a geodesic, and the progress of
  a model is t_w = argmin_{λ ∈ [0,1]} d_B(P_w, P^λ): its position projected onto that path.

For P0 and P* every sample's arc has the same length d = arccos(1/√C), and with
u_n = √C·√p_w[n,y_n] / Σ_c √p_w[n,c] the objective reduces to

    f(λ) = −mean_n log( sin((1−λ)d) + u_n sin(λd) ) + const,

a convex function of λ (the log of a positive concave function, negated). It is minimized for
all models at once by a bracketed Newton iteration (f'' = mean_n r_n² + d² > 0 with
r_n = d (u_n cos(λd) − cos((1−λ)d)) / (sin((1−λ)d) + u_n sin(λd)) and f' = −mean_n r_n).
The boundaries are closed forms: λ = 0 exactly when mean_n u_n ≤ cos d (f'(0) ≥ 0), λ = 1
exactly when mean_n 1/u_n ≤ cos d (f'(1) ≤ 0; only a model that is one-hot on the truth
everywhere).

``raw_probabilities=True`` reproduces the original study's plotting script, which put p_w
instead of √p_w into the Bhattacharyya sum, i.e. minimized −mean_n log Σ_c p_w[n,c] √P^λ[n,c]
(u_n becomes √C·p_w[n,y_n]). It is not a distance between distributions; use it only to compare
with that study's figure.

Inputs may be numpy arrays or torch tensors, float32 or float64; outputs are numpy float64.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ._probabilities import as_labels, as_probabilities, check_rows, neg_log_overlap, to_numpy, unit_sqrt

log = logging.getLogger(__name__)

# Newton stops when a step is below this; its convergence is quadratic, so the error is far smaller.
_STEP_TOLERANCE = 1e-10
_MAX_ITERATIONS = 100
# Models solved together: their (models, N) work arrays stay around a few hundred kB (cache-sized).
_BLOCK_ELEMENTS = 1 << 16


def bhattacharyya_distance(p: object, q: object) -> np.ndarray:
    """d_B(p, q) = −(1/N) Σ_n log Σ_c √(p[n,c] q[n,c]) for p (..., N, C) and q (..., N, C).

    Leading axes broadcast against each other; the result has their broadcast shape (a 0-d
    array for two single models). Rows are rescaled to sum to exactly 1 first, so d_B(p, p) = 0.
    A sample on which p and q have disjoint support is floored (see ``_probabilities``).
    """
    p = as_probabilities(p, "p")
    q = as_probabilities(q, "q")
    if p.shape[-2:] != q.shape[-2:]:
        raise ValueError(f"p and q must have the same (N, C), got {tuple(p.shape)} and {tuple(q.shape)}")
    try:
        np.broadcast_shapes(p.shape[:-2], q.shape[:-2])
    except ValueError:
        raise ValueError(f"leading axes of p {tuple(p.shape)} and q {tuple(q.shape)} do not broadcast") from None
    overlap = np.sum(unit_sqrt(p) * unit_sqrt(q), axis=-1)  # (..., N)
    return np.asarray(neg_log_overlap(overlap).mean(axis=-1))


def _as_positions(lam: object) -> np.ndarray:
    """λ as a float64 array of 0 or 1 axes, every entry finite and in [0, 1]."""
    positions = to_numpy(lam, "lam").astype(np.float64)
    if positions.ndim > 1:
        raise ValueError(f"lam must be a scalar or a 1-D array, got shape {tuple(positions.shape)}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("lam contains NaN or inf")
    if np.any((positions < 0) | (positions > 1)):
        raise ValueError(f"lam must lie in [0, 1], got values in [{positions.min():g}, {positions.max():g}]")
    return positions


def geodesic(p_start: object, p_end: object, lam: object) -> np.ndarray:
    """The model at position ``lam`` on the geodesic from ``p_start`` to ``p_end``.

    p_start, p_end: (..., N, C), leading axes broadcast. lam: a scalar → result (..., N, C); a
    1-D array (L,) → result (L, ..., N, C). Per sample, with s = √p on the unit sphere and
    d = the angle between s_start and s_end,
    s^λ = [sin((1−λ)d) s_start + sin(λd) s_end] / sin d, and the result is (s^λ)².
    Where the two rows coincide (d = 0) the path is that single point.
    """
    p_start = as_probabilities(p_start, "p_start")
    p_end = as_probabilities(p_end, "p_end")
    if p_start.shape[-2:] != p_end.shape[-2:]:
        raise ValueError(f"p_start and p_end must have the same (N, C), got {tuple(p_start.shape)} and {tuple(p_end.shape)}")
    positions = _as_positions(lam)
    s_start, s_end = np.broadcast_arrays(unit_sqrt(p_start), unit_sqrt(p_end))
    # The angle from the chord |s_start − s_end| = 2 sin(d/2): accurate also for nearby rows, unlike arccos.
    chord = np.linalg.norm(s_start - s_end, axis=-1)
    angle = 2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))  # (..., N), in [0, π/2]
    if positions.ndim == 1:
        positions = positions.reshape((-1,) + (1,) * angle.ndim)
    sin_angle = np.sin(angle)
    coincide = sin_angle == 0.0
    safe_sin = np.where(coincide, 1.0, sin_angle)
    weight_start = np.where(coincide, 1.0 - positions, np.sin((1.0 - positions) * angle) / safe_sin)
    weight_end = np.where(coincide, positions, np.sin(positions * angle) / safe_sin)
    point = weight_start[..., None] * s_start + weight_end[..., None] * s_end
    return point * point


def _overlap_ratios(block: np.ndarray, labels: np.ndarray, raw_probabilities: bool) -> np.ndarray:
    """u (k, N): each sample's overlap with P* over its overlap with P0, for a block of models (k, N, C).

    u_n = √C √p[n,y_n] / Σ_c √p[n,c], or √C p[n,y_n] / Σ_c p[n,c] for the raw-probability form.
    The rows' normalization cancels in the ratio, so it is not applied.
    """
    values = block.astype(np.float64)
    if not raw_probabilities:
        np.sqrt(values, out=values)
    true_class = np.take_along_axis(values, labels[None, :, None], axis=-1)[..., 0]
    totals = values @ np.ones(values.shape[-1])  # faster than a sum over a short last axis
    return math.sqrt(block.shape[-1]) * true_class / totals


def _argmin_on_geodesic(ratios: np.ndarray, n_classes: int) -> np.ndarray:
    """Minimize f(λ) = −mean_n log(sin((1−λ)d) + u_n sin(λd)) over [0, 1] for each row of u (k, N)."""
    angle = math.acos(1.0 / math.sqrt(n_classes))
    cos_angle = math.cos(angle)
    k = ratios.shape[0]
    result = np.empty(k)
    # A relative slack of 1e-12 lets P0 and P* land exactly on 0 and 1 despite rounding in u.
    threshold = cos_angle * (1.0 + 1e-12)
    with np.errstate(divide="ignore"):
        at_end = np.mean(1.0 / ratios, axis=1) <= threshold  # f'(1) ≤ 0
    at_start = np.mean(ratios, axis=1) <= threshold  # f'(0) ≥ 0
    result[at_start] = 0.0
    result[at_end & ~at_start] = 1.0
    interior = ~(at_start | at_end)
    if not interior.any():
        return result
    u = ratios[interior]  # (m, N)
    lam = np.full((u.shape[0], 1), 0.5)
    lower = np.zeros_like(lam)
    upper = np.ones_like(lam)
    converged = np.zeros(lam.shape, dtype=bool)
    # A proposal may land on λ = 1 exactly, where a sample with u = 0 makes r infinite: the step is then
    # NaN and bisection takes over, so the floating-point warnings of that case are silenced.
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(_MAX_ITERATIONS):
            sin_rest, sin_done = np.sin((1.0 - lam) * angle), np.sin(lam * angle)
            cos_rest, cos_done = np.cos((1.0 - lam) * angle), np.cos(lam * angle)
            r = u * cos_done
            r -= cos_rest
            denominator = u * sin_done
            denominator += sin_rest
            r /= denominator  # r_n / d
            slope = -angle * r.mean(axis=1, keepdims=True)
            curvature = angle * angle * (np.mean(r * r, axis=1, keepdims=True) + 1.0)
            # The slope's sign brackets the minimizer; a Newton step leaving the bracket becomes a bisection.
            lower = np.where(slope < 0, lam, lower)
            upper = np.where(slope > 0, lam, upper)
            proposal = lam - slope / curvature
            outside = ~((proposal >= lower) & (proposal <= upper))  # NaN counts as outside
            proposal = np.where(outside, 0.5 * (lower + upper), proposal)
            converged = np.abs(proposal - lam) <= _STEP_TOLERANCE
            lam = proposal
            if converged.all():
                break
    if not converged.all():
        log.warning("progress: %d of %d models did not converge in %d iterations",
                    int(np.count_nonzero(~converged)), k, _MAX_ITERATIONS)
    result[interior] = lam[:, 0]
    return result


def progress(probs: object, labels: object, raw_probabilities: bool = False) -> np.ndarray:
    """Progress t_w ∈ [0, 1] of every model in ``probs`` (..., N, C) toward the truth ``labels`` (N,).

    Returns an array with the leading shape of ``probs`` (0-d for a single model (N, C)): the
    argmin over λ ∈ [0, 1] of d_B(P_w, geodesic(P0, P*, λ)), P0 uniform over C, P* one-hot of
    ``labels``, accurate to well below 1e-6. Needs C ≥ 2. Works block by block, so memory
    beyond the input stays small. ``raw_probabilities`` selects the original study's p-for-√p
    form (see the module docstring); never use it for new results.
    """
    probs = as_probabilities(probs, "probs", min_classes=2, validate=False)
    n_samples, n_classes = probs.shape[-2:]
    labels = as_labels(labels, n_samples, n_classes)
    leading_shape = probs.shape[:-2]
    n_models = math.prod(leading_shape)
    models = probs.reshape(n_models, n_samples, n_classes)
    t_w = np.empty(n_models)
    per_block = max(1, _BLOCK_ELEMENTS // n_samples)
    for start in range(0, n_models, per_block):
        block = models[start:start + per_block]
        check_rows(block.reshape(-1, n_classes), "probs", start * n_samples, leading_shape + (n_samples,))
        t_w[start:start + per_block] = _argmin_on_geodesic(_overlap_ratios(block, labels, raw_probabilities), n_classes)
    return t_w.reshape(leading_shape)
