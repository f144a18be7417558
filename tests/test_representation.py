"""Representation analyses: CKA, alignment, uniformity and effective rank against plain loops,
closed forms and invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import contrastlab.analysis.representation as representation
from contrastlab.analysis.representation import alignment, cka_matrix, effective_rank, linear_cka, uniformity

pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------- slow references


def slow_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """tr(K H L H) / (N−1)² with an explicit centering matrix H = I − 11ᵀ/N."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h)) / (n - 1) ** 2


def slow_unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012), eq. 5, with every sum written as a loop over i ≠ j."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    for i in range(n):
        kt[i, i] = lt[i, i] = 0.0
    trace = sum(kt[i, j] * lt[j, i] for i in range(n) for j in range(n))
    sum_k = sum(kt[i, j] for i in range(n) for j in range(n))
    sum_l = sum(lt[i, j] for i in range(n) for j in range(n))
    sum_kl = sum(kt[i, j] * lt[j, q] for i in range(n) for j in range(n) for q in range(n))
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * sum_kl) / (n * (n - 3))


def slow_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """CKA from Gram matrices of the column-centred features K = XXᵀ, L = YYᵀ."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    k, l = xc @ xc.T, yc @ yc.T
    hsic = slow_unbiased_hsic if debiased else slow_hsic
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def slow_alignment(z1: np.ndarray, z2: np.ndarray, alpha: float) -> float:
    total = 0.0
    for a, b in zip(z1, z2):
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
        total += math.sqrt(sum((a[d] - b[d]) ** 2 for d in range(len(a)))) ** alpha
    return total / len(z1)


def slow_uniformity(z: np.ndarray, t: float) -> float:
    u = [row / np.linalg.norm(row) for row in z]
    terms = [math.exp(-t * float(np.sum((u[i] - u[j]) ** 2))) for i in range(len(u)) for j in range(i + 1, len(u))]
    return math.log(sum(terms) / len(terms))


def slow_effective_rank(x: np.ndarray) -> float:
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = s / s.sum()
    return math.exp(-sum(v * math.log(v) for v in p if v > 0))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(5)


def related(rng: np.random.Generator, n: int = 12, d1: int = 5, d2: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Two feature sets that share part of their structure, with non-zero column means."""
    x = rng.standard_normal((n, d1)) + 3.0
    y = np.tanh(x @ rng.standard_normal((d1, d2))) + 0.5 * rng.standard_normal((n, d2)) - 1.0
    return x, y


def random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------- CKA


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matches_gram_reference(rng, debiased):
    x, y = related(rng)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(slow_cka(x, y, debiased), rel=1e-10, abs=1e-12)


def test_cka_gram_path_when_samples_are_few(rng):
    # N smaller than the widths: the Gram-space product is the cheaper one
    x, y = related(rng, n=6, d1=40, d2=50)
    for debiased in (False, True):
        assert linear_cka(x, y, debiased=debiased) == pytest.approx(slow_cka(x, y, debiased), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_set_with_itself_is_one(rng, debiased):
    x, _ = related(rng)
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariances_and_symmetry(rng, debiased):
    x, y = related(rng)
    base = linear_cka(x, y, debiased=debiased)
    q1, q2 = random_orthogonal(rng, x.shape[1]), random_orthogonal(rng, y.shape[1])
    assert linear_cka(x @ q1, y @ q2, debiased=debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y, debiased=debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(y, x, debiased=debiased) == pytest.approx(base, rel=1e-12)
    assert linear_cka(x + 100.0, y, debiased=debiased) == pytest.approx(base, rel=1e-8)  # column centring


def test_cka_accepts_torch_of_any_float_dtype_and_flattens_feature_maps(rng):
    x, y = related(rng, d1=8)
    expected = slow_cka(x, y)
    assert linear_cka(torch.tensor(x, dtype=torch.float32), torch.tensor(y), debiased=False) == pytest.approx(expected, rel=1e-5)
    assert linear_cka(x.reshape(len(x), 2, 2, 2), y) == pytest.approx(expected, rel=1e-12)
    assert isinstance(linear_cka(x, y), float)


def test_cka_closed_form_for_orthogonal_subspaces(rng):
    # centred columns of X orthogonal to those of Y: YᵀX = 0, so CKA = 0
    columns = rng.standard_normal((8, 4))
    q, _ = np.linalg.qr(columns - columns.mean(0))  # combinations of centred columns stay centred
    x, y = q[:, :2], q[:, 2:4]
    assert linear_cka(x, y) == pytest.approx(0.0, abs=1e-12)


def test_cka_errors_and_constant_features(rng):
    x, y = related(rng)
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(x, y[:-1])
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(ValueError, match="non-finite"):
        linear_cka(np.full_like(x, np.nan), y)
    assert math.isnan(linear_cka(np.ones_like(x), y))
    with pytest.raises(ValueError, match="real numbers"):
        linear_cka(x > 0, y)
    with pytest.raises(ValueError, match="shape"):
        alignment(x.reshape(len(x), -1, 1), x.reshape(len(x), -1, 1))
    reversed_view = x[::-1]  # negative strides and a read-only array are fine
    reversed_view.flags.writeable = False
    assert linear_cka(reversed_view, y[::-1]) == pytest.approx(slow_cka(x, y), rel=1e-10)


def test_cka_matrix_matches_pairwise(rng):
    x, y = related(rng)
    z = rng.standard_normal((x.shape[0], 3))
    for debiased in (False, True):
        names, matrix = cka_matrix({"a": x, "b": torch.tensor(y), "c": z}, debiased=debiased)
        assert names == ["a", "b", "c"]
        assert matrix.shape == (3, 3) and np.allclose(matrix, matrix.T)
        sets = {"a": x, "b": y, "c": z}
        for i, p in enumerate(names):
            for j, q in enumerate(names):
                assert matrix[i, j] == pytest.approx(slow_cka(sets[p], sets[q], debiased), rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="same samples"):
        cka_matrix({"a": x, "b": y[:-2]})


# ---------------------------------------------------------------- alignment and uniformity


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.5])
def test_alignment_matches_loop(rng, alpha):
    z1 = rng.standard_normal((10, 6)) * 3
    z2 = z1 + 0.4 * rng.standard_normal((10, 6))
    assert alignment(z1, z2, alpha=alpha) == pytest.approx(slow_alignment(z1, z2, alpha), rel=1e-12)
    assert alignment(torch.tensor(z1, dtype=torch.float32), z2, alpha=alpha) == pytest.approx(slow_alignment(z1, z2, alpha), rel=1e-5)


def test_alignment_closed_forms(rng):
    z = rng.standard_normal((5, 4))
    assert alignment(z, 2.0 * z) == pytest.approx(0.0, abs=1e-14)  # same direction
    assert alignment(z, -z) == pytest.approx(4.0)  # antipodal: ‖2u‖² = 4
    with pytest.raises(ValueError, match="alpha"):
        alignment(z, z, alpha=0)


@pytest.mark.parametrize("t", [0.5, 2.0, 10.0])
def test_uniformity_matches_loop(rng, t):
    z = rng.standard_normal((13, 5))
    assert uniformity(z, t=t) == pytest.approx(slow_uniformity(z, t), rel=1e-12)


def test_uniformity_blocks_agree_with_one_block(rng, monkeypatch):
    z = rng.standard_normal((23, 4))
    whole = uniformity(z)
    monkeypatch.setattr(representation, "_PAIR_BLOCK_ELEMENTS", 23 * 3)  # three rows per block
    assert uniformity(z) == pytest.approx(whole, rel=1e-13)
    assert uniformity(z) == pytest.approx(slow_uniformity(z, 2.0), rel=1e-12)


def test_uniformity_closed_forms_and_stability():
    # all rows equal: every distance is 0 -> log mean exp(0) = 0
    assert uniformity(np.ones((6, 3))) == pytest.approx(0.0, abs=1e-12)
    # two antipodal points: log exp(−4t) = −4t, even where exp underflows in float64
    pair = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert uniformity(pair, t=2.0) == pytest.approx(-8.0)
    assert uniformity(pair, t=500.0) == pytest.approx(-2000.0)
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(np.ones((1, 3)))


# ---------------------------------------------------------------- effective rank


def test_effective_rank_matches_loop(rng):
    x = rng.standard_normal((20, 6)) @ np.diag([5, 3, 1, 0.5, 0.1, 0.01]) + 2.0
    assert effective_rank(x) == pytest.approx(slow_effective_rank(x), rel=1e-10)
    assert effective_rank(torch.tensor(x)) == pytest.approx(slow_effective_rank(x), rel=1e-10)


def test_effective_rank_closed_forms(rng):
    # centred features with three equal singular values: effective rank 3
    columns = rng.standard_normal((8, 3))
    q, _ = np.linalg.qr(columns - columns.mean(0))
    assert effective_rank(2.0 * q @ random_orthogonal(rng, 3)) == pytest.approx(3.0, rel=1e-10)
    rank_one = np.outer(rng.standard_normal(10), rng.standard_normal(4))
    assert effective_rank(rank_one, center=False) == pytest.approx(1.0, rel=1e-6)
    assert effective_rank(np.full((5, 3), 7.0)) == 0.0
    assert effective_rank(np.zeros((5, 3))) == 0.0
