"""InPCA: the distance matrix against plain loops, the embedding against a dense general eigensolver,
closed forms and invariances."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

import contrastlab.analysis.inpca as inpca_module
from contrastlab.analysis.inpca import bhattacharyya_matrix, embed_distances, inpca

# ---------------------------------------------------------------- slow references


def slow_matrix(probs: np.ndarray) -> np.ndarray:
    """D_ab = −(1/N) Σ_n log Σ_c √(p_a[n,c] p_b[n,c]) by plain loops."""
    n_models, n_samples, n_classes = probs.shape
    d = np.zeros((n_models, n_models))
    for a in range(n_models):
        for b in range(n_models):
            total = 0.0
            for n in range(n_samples):
                total += math.log(sum(math.sqrt(probs[a, n, c] * probs[b, n, c]) for c in range(n_classes)))
            d[a, b] = -total / n_samples
    return d


def slow_embedding(distances: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W = −½ J D J with an explicit J, a general (non-symmetric) eigensolver, sorted by |λ|, signs fixed."""
    m = distances.shape[0]
    centering = np.eye(m) - np.ones((m, m)) / m
    w = -0.5 * centering @ distances @ centering
    values, vectors = np.linalg.eig(w)
    values, vectors = values.real, vectors.real
    order = sorted(range(m), key=lambda i: -abs(values[i]))
    coords = np.zeros((m, n_components))
    kept = np.zeros(n_components)
    for k, i in enumerate(order[:n_components]):
        v = vectors[:, i] / np.linalg.norm(vectors[:, i])
        if v[np.argmax(np.abs(v))] < 0:
            v = -v
        coords[:, k] = v * math.sqrt(abs(values[i]))
        kept[k] = values[i]
    explained = np.abs(kept) / np.abs(values).sum()
    return coords, kept, explained


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def trajectory_like(rng: np.random.Generator, n_models: int, n_samples: int, n_classes: int) -> np.ndarray:
    """Models drifting from near-uniform toward confident predictions, plus the one-hot truth last."""
    labels = rng.integers(0, n_classes, n_samples)
    logits = rng.standard_normal((n_models - 1, n_samples, n_classes)) * np.linspace(0.2, 2.0, n_models - 1)[:, None, None]
    logits[:, np.arange(n_samples), labels] += np.linspace(0.0, 4.0, n_models - 1)[:, None]
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    return np.concatenate([probs, np.eye(n_classes)[labels][None]])


# ---------------------------------------------------------------- distance matrix


def test_matrix_matches_loops_including_one_hot_truth(rng):
    probs = trajectory_like(rng, 9, 13, 4)
    expected = slow_matrix(probs)
    result = bhattacharyya_matrix(probs)
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-14)
    assert np.all(np.diag(result) == 0.0) and np.array_equal(result, result.T)


def test_matrix_chunking_does_not_change_the_result(rng, monkeypatch):
    probs = trajectory_like(rng, 23, 31, 5)
    whole = bhattacharyya_matrix(probs)
    # blocks of 4 models (a ragged last block) and 3 samples per chunk (a ragged last chunk)
    monkeypatch.setattr(inpca_module, "_MODEL_BLOCK", 4)
    monkeypatch.setattr(inpca_module, "_WORK_ELEMENTS", 3 * 4 * 4)
    np.testing.assert_allclose(bhattacharyya_matrix(probs), whole, rtol=1e-13, atol=1e-15)


def test_worker_count_and_many_classes_do_not_change_the_result(rng):
    # C = 1000 shrinks the model blocks to 16 (products stay small): 20 models make a ragged second block
    probs = rng.dirichlet(np.ones(1000), size=(20, 2))
    expected = slow_matrix(probs)
    for workers in (1, 3):
        np.testing.assert_allclose(bhattacharyya_matrix(probs, workers=workers, progress=True), expected,
                                   rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="workers"):
        bhattacharyya_matrix(probs, workers=0)


def test_matrix_of_copies_is_zero_and_accepts_float32_torch(rng):
    p = rng.dirichlet(np.ones(3), size=(1, 8))
    copies = np.concatenate([p, p, p])
    np.testing.assert_allclose(bhattacharyya_matrix(copies), 0.0, atol=1e-15)
    probs = trajectory_like(rng, 5, 10, 3)
    from_torch = bhattacharyya_matrix(torch.from_numpy(probs).float())
    assert from_torch.dtype == np.float64
    np.testing.assert_allclose(from_torch, bhattacharyya_matrix(probs), rtol=1e-5, atol=1e-7)


def test_disjoint_support_is_floored_and_logged(caplog):
    probs = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]]])
    with caplog.at_level(logging.WARNING):
        d = bhattacharyya_matrix(probs)
    assert d[0, 1] == pytest.approx(-math.log(1e-300))
    assert d[0, 2] == pytest.approx(0.5 * math.log(2))
    assert "floored" in caplog.text


# ---------------------------------------------------------------- embedding


def test_embedding_matches_dense_general_eigensolver(rng):
    probs = trajectory_like(rng, 14, 20, 5)
    distances = slow_matrix(probs)
    coords, kept, explained = slow_embedding(distances, 4)
    result = inpca(probs, n_components=4)
    assert result.coords.shape == (14, 4) and result.eigenvalues.shape == (4,) and result.spectrum.shape == (14,)
    np.testing.assert_allclose(result.eigenvalues, kept, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.coords, coords, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(result.explained, explained, rtol=1e-9)
    assert np.all(np.diff(np.abs(result.spectrum)) <= 1e-15)  # ordered by |λ|


def test_two_models_closed_form():
    delta = 0.37
    result = embed_distances(np.array([[0.0, delta], [delta, 0.0]]), n_components=1)
    # W = (δ/2) J: one eigenvalue δ/2 with eigenvector (1, −1)/√2 → coordinates ±√δ / 2, first one positive
    assert result.eigenvalues[0] == pytest.approx(delta / 2)
    np.testing.assert_allclose(result.coords[:, 0], [math.sqrt(delta) / 2, -math.sqrt(delta) / 2], rtol=1e-12)
    assert result.explained[0] == pytest.approx(1.0)


def test_all_components_reconstruct_distances_with_minkowski_signs(rng):
    probs = trajectory_like(rng, 12, 15, 4)
    distances = bhattacharyya_matrix(probs)
    result = inpca(probs, n_components=12)
    assert np.any(result.eigenvalues < -1e-6), "Bhattacharyya geometry should have time-like directions"
    signs = np.sign(result.eigenvalues)
    gaps = result.coords[:, None, :] - result.coords[None, :, :]
    np.testing.assert_allclose(np.sum(signs * gaps**2, axis=-1), distances, atol=1e-10)
    assert result.explained.sum() == pytest.approx(1.0)


def test_permuting_models_permutes_the_embedding(rng):
    probs = trajectory_like(rng, 16, 18, 5)
    order = rng.permutation(16)
    base = inpca(probs, n_components=3)
    permuted = inpca(probs[order], n_components=3)
    np.testing.assert_allclose(permuted.coords, base.coords[order], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(permuted.eigenvalues, base.eigenvalues, rtol=1e-10)


def test_sign_convention_is_deterministic(rng):
    probs = trajectory_like(rng, 10, 12, 3)
    result = inpca(probs, n_components=3)
    for column in result.coords.T:
        assert column[np.argmax(np.abs(column))] > 0
    # the same models given as float32: the same orientation, not a mirror image
    again = inpca(probs.astype(np.float32), n_components=3)
    np.testing.assert_allclose(again.coords, result.coords, atol=1e-4)


def test_identical_models_embed_at_the_origin(rng):
    p = rng.dirichlet(np.ones(3), size=(1, 6))
    result = inpca(np.repeat(p, 4, axis=0), n_components=2)
    np.testing.assert_allclose(result.coords, 0.0, atol=1e-7)
    assert np.all(np.isfinite(result.explained))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("probs, message", [
    (np.full((4, 3), 1 / 3), r"\(M, N, C\)"),
    (np.full((2, 4, 3), 0.4), "do not sum to 1"),
    (np.where(np.arange(3) == 0, np.nan, np.full((2, 4, 3), 1 / 3)), "NaN or inf"),
    (np.array([[[1.2, -0.2]], [[0.5, 0.5]]]), "negative"),
    (np.full((2, 4, 3), 1 / 3).astype(np.complex128), "real"),
])
def test_inpca_rejects_bad_probabilities(probs, message):
    with pytest.raises(ValueError, match=message):
        inpca(probs, n_components=1)


def test_embedding_rejects_bad_requests():
    probs = np.full((3, 2, 2), 0.5)
    with pytest.raises(ValueError, match="n_components"):
        inpca(probs, n_components=4)
    with pytest.raises(ValueError, match="symmetric"):
        embed_distances(np.array([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="square"):
        embed_distances(np.zeros((2, 3)))


def test_torch_device_path_equals_the_numpy_path():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=(9, 50)).astype(np.float32)
    probs[2, :5] = np.eye(4)[0]  # one-hot rows: overlaps of zero get floored on both paths
    probs[3, :5] = np.eye(4)[1]
    numpy_path = bhattacharyya_matrix(probs)
    torch_path = bhattacharyya_matrix(probs, device="cpu")
    assert np.allclose(numpy_path, torch_path, rtol=1e-12, atol=1e-12)
    assert np.array_equal(torch_path, torch_path.T) and not torch_path.diagonal().any()
