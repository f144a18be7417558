"""Bhattacharyya distance, geodesic and progress t_w against slow references written from the formulas."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from contrastlab.analysis.progress import bhattacharyya_distance, geodesic, progress

# ---------------------------------------------------------------- slow references (plain loops)


def slow_distance(p: np.ndarray, q: np.ndarray, raw_first: bool = False) -> float:
    """−(1/N) Σ_n log Σ_c √(p q); with raw_first, the original script's Σ_c p √q."""
    n_samples, n_classes = p.shape
    total = 0.0
    for n in range(n_samples):
        overlap = 0.0
        for c in range(n_classes):
            first = p[n, c] if raw_first else math.sqrt(p[n, c])
            overlap += first * math.sqrt(q[n, c])
        total += math.log(overlap)
    return -total / n_samples


def slow_geodesic(p_start: np.ndarray, p_end: np.ndarray, lam: float) -> np.ndarray:
    """Per sample: d = arccos Σ_c √(p_start p_end), √p^λ = [sin((1−λ)d)√p_start + sin(λd)√p_end]/sin d."""
    n_samples, n_classes = p_start.shape
    out = np.empty((n_samples, n_classes))
    for n in range(n_samples):
        cos_d = sum(math.sqrt(p_start[n, c] * p_end[n, c]) for c in range(n_classes))
        d = math.acos(min(cos_d, 1.0))
        for c in range(n_classes):
            if d == 0.0:
                out[n, c] = p_start[n, c]
            else:
                root = (math.sin((1 - lam) * d) * math.sqrt(p_start[n, c]) + math.sin(lam * d) * math.sqrt(p_end[n, c])) / math.sin(d)
                out[n, c] = root * root
    return out


def slow_progress(p: np.ndarray, labels: np.ndarray, raw: bool = False) -> float:
    """argmin over [0, 1] of the distance to the P0 → P* geodesic, by a scalar minimizer per model."""
    n_samples, n_classes = p.shape
    uniform = np.full((n_samples, n_classes), 1.0 / n_classes)
    truth = np.zeros((n_samples, n_classes))
    for n in range(n_samples):
        truth[n, labels[n]] = 1.0

    def objective(lam: float) -> float:
        return slow_distance(p, slow_geodesic(uniform, truth, lam), raw_first=raw)

    inner = minimize_scalar(objective, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-11}).x
    candidates = [0.0, inner, 1.0]  # the bounded search never evaluates the ends themselves
    values = [objective(lam) if lam < 1.0 else _objective_at_truth(p, labels, raw) for lam in candidates]
    return candidates[int(np.argmin(values))]


def _objective_at_truth(p: np.ndarray, labels: np.ndarray, raw: bool) -> float:
    """The objective at λ = 1, +inf if a sample gives its true class probability 0."""
    total = 0.0
    for n in range(p.shape[0]):
        value = p[n, labels[n]] if raw else math.sqrt(p[n, labels[n]])
        if value == 0.0:
            return math.inf
        total += math.log(value)
    return -total / p.shape[0]


# ---------------------------------------------------------------- data


def models_toward_truth(rng: np.random.Generator, n_models: int, n_samples: int, n_classes: int,
                        with_zeros: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Softmax predictions whose true-class logit grows from model to model, spanning t_w ≈ 0 … 0.9."""
    labels = rng.integers(0, n_classes, n_samples)
    logits = rng.standard_normal((n_models, n_samples, n_classes))
    logits[:, np.arange(n_samples), labels] += np.linspace(-1.0, 6.0, n_models)[:, None]
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if with_zeros:  # exact zeros, including on a true class
        probs[0, 0, :] = 0.0
        probs[0, 0, (labels[0] + 1) % n_classes] = 1.0
        probs[-1, 1, :] = 0.0
        probs[-1, 1, labels[1]] = 1.0
    return probs, labels


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(5)


# ---------------------------------------------------------------- Bhattacharyya distance


def test_distance_matches_loops(rng):
    p = rng.dirichlet(np.ones(4), size=(3, 17))
    q = rng.dirichlet(np.ones(4), size=(3, 17))
    expected = [slow_distance(p[i], q[i]) for i in range(3)]
    np.testing.assert_allclose(bhattacharyya_distance(p, q), expected, rtol=1e-12)
    # float32 numpy and torch tensors give the same within float32 rounding of the inputs
    np.testing.assert_allclose(bhattacharyya_distance(torch.from_numpy(p).float(), q.astype(np.float32)), expected,
                               rtol=1e-5, atol=1e-7)


def test_distance_broadcasts_over_leading_axes(rng):
    p = rng.dirichlet(np.ones(3), size=(4, 1, 9))
    q = rng.dirichlet(np.ones(3), size=(5, 9))
    result = bhattacharyya_distance(p, q)
    assert result.shape == (4, 5)
    assert result[2, 3] == pytest.approx(slow_distance(p[2, 0], q[3]), rel=1e-12)


def test_distance_closed_forms(rng):
    n_classes = 6
    uniform = np.full((5, n_classes), 1.0 / n_classes)
    one_hot = np.eye(n_classes)[rng.integers(0, n_classes, 5)]
    # Σ_c √(1/C · δ_cy) = 1/√C on every sample → ½ log C
    assert float(bhattacharyya_distance(uniform, one_hot)) == pytest.approx(0.5 * math.log(n_classes), rel=1e-14)
    p = rng.dirichlet(np.ones(n_classes), size=7)
    q = rng.dirichlet(np.ones(n_classes), size=7)
    assert float(bhattacharyya_distance(p, p)) == pytest.approx(0.0, abs=1e-15)
    assert float(bhattacharyya_distance(one_hot, one_hot)) == 0.0
    assert float(bhattacharyya_distance(p, q)) == pytest.approx(float(bhattacharyya_distance(q, p)), rel=1e-14)
    assert float(bhattacharyya_distance(p, q)) > 0


def test_disjoint_support_is_floored_and_logged(caplog):
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    q = np.array([[0.0, 1.0], [0.5, 0.5]])
    with caplog.at_level(logging.WARNING):
        value = float(bhattacharyya_distance(p, q))
    assert value == pytest.approx(-math.log(1e-300) / 2, rel=1e-12)
    assert "floored" in caplog.text


# ---------------------------------------------------------------- geodesic


def test_geodesic_matches_loops_for_scalar_and_vector_lambda(rng):
    start = rng.dirichlet(np.ones(5), size=8)
    end = rng.dirichlet(np.ones(5), size=8)
    np.testing.assert_allclose(geodesic(start, end, 0.3), slow_geodesic(start, end, 0.3), rtol=1e-10, atol=1e-14)
    positions = np.array([0.0, 0.25, 0.8, 1.0])
    path = geodesic(start, end, positions)
    assert path.shape == (4, 8, 5)
    for i, lam in enumerate(positions):
        np.testing.assert_allclose(path[i], slow_geodesic(start, end, lam), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(path.sum(axis=-1), 1.0, atol=1e-12)


def test_geodesic_endpoints_reversal_and_constant_speed(rng):
    start = rng.dirichlet(np.ones(4), size=(2, 6))
    end = rng.dirichlet(np.ones(4), size=(2, 6))
    np.testing.assert_allclose(geodesic(start, end, 0.0), start, atol=1e-14)
    np.testing.assert_allclose(geodesic(start, end, 1.0), end, atol=1e-14)
    np.testing.assert_allclose(geodesic(start, end, 0.35), geodesic(end, start, 0.65), atol=1e-14)

    def angle(p, q):
        return np.arccos(np.clip(np.sum(np.sqrt(p * q), axis=-1), -1, 1))

    np.testing.assert_allclose(angle(start, geodesic(start, end, 0.4)), 0.4 * angle(start, end), rtol=1e-6)


def test_geodesic_between_identical_rows_stays_put(rng):
    p = rng.dirichlet(np.ones(3), size=4)
    np.testing.assert_allclose(geodesic(p, p, np.array([0.0, 0.5, 1.0])), np.broadcast_to(p, (3, 4, 3)), atol=1e-15)


# ---------------------------------------------------------------- progress t_w


@pytest.mark.parametrize("raw", [False, True])
def test_progress_matches_scalar_minimizer(rng, raw):
    probs, labels = models_toward_truth(rng, 9, 12, 4, with_zeros=True)
    expected = [slow_progress(p, labels, raw) for p in probs]
    result = progress(probs, labels, raw_probabilities=raw)
    assert result.shape == (9,)
    np.testing.assert_allclose(result, expected, atol=1e-6)
    assert np.ptp(result) > 0.3  # the models really span the path


def test_progress_closed_forms_on_the_geodesic(rng):
    n_samples, n_classes = 25, 5
    labels = rng.integers(0, n_classes, n_samples)
    uniform = np.full((n_samples, n_classes), 1.0 / n_classes)
    truth = np.eye(n_classes)[labels]
    for raw in (False, True):
        assert float(progress(uniform, labels, raw_probabilities=raw)) == 0.0
        assert float(progress(truth, labels, raw_probabilities=raw)) == 1.0
    positions = np.array([0.0, 0.07, 0.5, 0.93, 1.0])
    on_path = geodesic(uniform, truth, positions)  # (5, N, C): models lying on the geodesic
    np.testing.assert_allclose(progress(on_path, labels), positions, atol=1e-9)
    # a single sample: its own λ, whatever the sample
    single = geodesic(uniform[:1], truth[:1], 0.62)
    assert float(progress(single, labels[:1])) == pytest.approx(0.62, abs=1e-9)


def test_progress_invariances(rng):
    probs, labels = models_toward_truth(rng, 6, 20, 4)
    base = progress(probs, labels)
    order = rng.permutation(20)
    np.testing.assert_allclose(progress(probs[:, order], labels[order]), base, atol=1e-12)
    relabel = rng.permutation(4)  # class c becomes relabel[c]
    renamed = np.empty_like(probs)
    renamed[..., relabel] = probs
    np.testing.assert_allclose(progress(renamed, relabel[labels]), base, atol=1e-12)
    # leading axes: a (2, 3, N, C) stack gives the same numbers in a (2, 3) array
    np.testing.assert_allclose(progress(probs.reshape(2, 3, 20, 4), labels), base.reshape(2, 3), atol=0)


def test_progress_accepts_torch_and_float32(rng):
    probs, labels = models_toward_truth(rng, 4, 30, 3)
    base = progress(probs, labels)
    result = progress(torch.from_numpy(probs).float(), torch.from_numpy(labels))
    assert isinstance(result, np.ndarray) and result.dtype == np.float64
    np.testing.assert_allclose(result, base, atol=1e-5)


def test_raw_form_differs_from_the_bhattacharyya_form(rng):
    probs, labels = models_toward_truth(rng, 5, 30, 5)
    assert np.abs(progress(probs, labels) - progress(probs, labels, raw_probabilities=True)).max() > 1e-3


# ---------------------------------------------------------------- bad input


def _valid(n_samples=4, n_classes=3):
    probs = np.full((2, n_samples, n_classes), 1.0 / n_classes)
    return probs, np.zeros(n_samples, dtype=np.int64)


@pytest.mark.parametrize("mutate, message", [
    (lambda p, y: (p[0, 0], y), "shape"),
    (lambda p, y: (p, np.array([0, 1, 3, 0])), "labels must lie in"),
    (lambda p, y: (p, np.array([0, -1, 0, 0])), "labels must lie in"),
    (lambda p, y: (p, y[:3]), "labels must have shape"),
    (lambda p, y: (p, y + 0.5), "integer"),
    (lambda p, y: (np.where(np.arange(3) == 1, np.nan, p), y), "NaN or inf"),
    (lambda p, y: (np.where(np.arange(3) == 1, np.inf, p), y), "NaN or inf"),
    (lambda p, y: (p * np.array([1.5, -0.5, 1.0]), y), "negative"),
    (lambda p, y: (p * 1.01, y), "do not sum to 1"),
    (lambda p, y: (p[..., :1] / p[..., :1], y), "at least 2 classes"),
])
def test_progress_rejects_bad_input(mutate, message):
    probs, labels = mutate(*_valid())
    with pytest.raises(ValueError, match=message):
        progress(probs, labels)


def test_errors_name_the_offending_index():
    probs, labels = _valid()
    probs[1, 2] = [0.5, 0.6, -0.1]
    with pytest.raises(ValueError, match=r"negative entries \(first at index \(1, 2\)\)"):
        progress(probs, labels)


def test_small_rounding_of_row_sums_is_tolerated(rng):
    probs, labels = models_toward_truth(rng, 3, 10, 4)
    np.testing.assert_allclose(progress(probs * (1 + 5e-6), labels), progress(probs, labels), atol=1e-12)


@pytest.mark.parametrize("lam", [-0.1, 1.5, np.nan, np.zeros((2, 2))])
def test_geodesic_rejects_bad_positions(lam):
    p = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="lam"):
        geodesic(p, p, lam)


def test_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same \\(N, C\\)"):
        bhattacharyya_distance(np.full((3, 2), 0.5), np.full((4, 2), 0.5))
    with pytest.raises(ValueError, match="do not broadcast"):
        bhattacharyya_distance(np.full((2, 3, 2), 0.5), np.full((3, 3, 2), 0.5))
