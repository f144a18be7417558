"""contrastive_loss and cross-entropy, and the methods that train them, against slow references written from the formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastlab.config import PretrainConfig
from contrastlab.objectives import contrastive_loss, supervised_cross_entropy
from contrastlab.train.methods import MethodState, StepBatch, get_method


def reference_contrastive_loss(features, labels, temperature, base_temperature, form):
    """The loss written out with plain loops over anchors, positives and contrasts (float64).

    Rows are numbered view-major here (the library numbers them sample-major) so the test
    also checks that the row order does not matter.
    """
    n_samples, n_views, _ = features.shape
    base_temperature = temperature if base_temperature is None else base_temperature
    rows, keys = [], []
    for v in range(n_views):
        for n in range(n_samples):
            rows.append(features[n, v].double() / features[n, v].double().norm())
            keys.append(n if labels is None else int(labels[n]))
    total, anchors = 0.0, 0
    for i in range(len(rows)):
        def similarity(j):
            return torch.dot(rows[i], rows[j]) / temperature

        denominator = sum(torch.exp(similarity(k)) for k in range(len(rows)) if k != i)
        positives = [p for p in range(len(rows)) if p != i and keys[p] == keys[i]]
        if not positives:
            continue
        if form == "out":
            term = sum(similarity(p) - torch.log(denominator) for p in positives) / len(positives)
        else:
            term = torch.log(sum(torch.exp(similarity(p)) / denominator for p in positives) / len(positives))
        total = total + term
        anchors += 1
    return -(temperature / base_temperature) * total / anchors


SHAPES = [  # (N, V, D, temperature, base_temperature)
    (3, 2, 4, 0.07, None),
    (5, 2, 8, 0.5, 0.07),
    (4, 3, 5, 0.1, None),
    (2, 4, 3, 1.0, 0.5),
    (6, 1, 6, 0.2, None),  # SupCon only: SimCLR has no positives with one view
]
CASES = [(*shape, supervised) for shape in SHAPES for supervised in (False, True) if supervised or shape[1] > 1]


@pytest.mark.parametrize("form", ["out", "in"])
@pytest.mark.parametrize("n, v, d, temperature, base_temperature, supervised", CASES)
def test_matches_loop_reference_value_and_gradient(n, v, d, temperature, base_temperature, supervised, form):
    generator = torch.Generator().manual_seed(n * 100 + v * 10 + d)
    features = torch.randn(n, v, d, generator=generator, dtype=torch.float64) * 3  # unnormalized on purpose
    labels = torch.randint(0, 2, (n,), generator=generator) if supervised else None
    if supervised and v == 1:
        labels = torch.tensor([0, 0, 1, 1, 1, 2])  # label 2 has one row: that anchor has no positive

    features.requires_grad_(True)
    loss = contrastive_loss(features, labels, temperature, base_temperature, form)
    (grad,) = torch.autograd.grad(loss, features)
    reference_features = features.detach().clone().requires_grad_(True)
    expected = reference_contrastive_loss(reference_features, labels, temperature, base_temperature, form)
    (expected_grad,) = torch.autograd.grad(expected, reference_features)

    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)


def test_float32_matches_reference():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(16, 2, 32, generator=generator)
    labels = torch.randint(0, 4, (16,), generator=generator)
    for form in ("out", "in"):
        expected = reference_contrastive_loss(features, labels, 0.07, None, form)
        torch.testing.assert_close(contrastive_loss(features, labels, form=form).double(), expected, rtol=1e-5, atol=1e-5)


def test_closed_form_two_orthogonal_samples():
    # Sample 0's views are both e1, sample 1's both e2: s = 1/τ for the pair, 0 across samples.
    temperature, base_temperature = 0.5, 0.25
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    features = torch.stack([torch.stack([e1, e1]), torch.stack([e2, e2])]).double()
    log_p = 1 / temperature - math.log(math.exp(1 / temperature) + 2)
    expected = -(temperature / base_temperature) * log_p
    for form in ("out", "in"):  # one positive per anchor: both forms agree
        loss = contrastive_loss(features, None, temperature, base_temperature, form)
        assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_closed_form_everything_positive():
    # When every other row is a positive, L_in = log(N·V − 1) whatever the embeddings are;
    # with identical embeddings every log p equals −log(N·V − 1), so L_out is the same.
    features = torch.randn(5, 2, 7, generator=torch.Generator().manual_seed(1))
    same_label = torch.zeros(5, dtype=torch.long)
    assert contrastive_loss(features, same_label, form="in").item() == pytest.approx(math.log(9), rel=1e-5)
    identical = torch.ones(5, 2, 7)
    for labels in (None, same_label):
        assert contrastive_loss(identical, labels, form="out").item() == pytest.approx(math.log(9), rel=1e-5)


@pytest.mark.parametrize("form", ["out", "in"])
def test_invariances(form):
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(6, 3, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 2])
    for key in (None, labels):
        loss = contrastive_loss(features, key, form=form)
        swapped_views = features[:, [1, 0, 2]]
        torch.testing.assert_close(contrastive_loss(swapped_views, key, form=form), loss)
        order = torch.randperm(6, generator=generator)
        permuted_labels = None if key is None else key[order]
        torch.testing.assert_close(contrastive_loss(features[order], permuted_labels, form=form), loss)
        rescaled = features * torch.rand(6, 3, 1, generator=generator, dtype=torch.float64).add(0.5)
        torch.testing.assert_close(contrastive_loss(rescaled, key, form=form), loss)
    # Relabelling the classes changes nothing either.
    torch.testing.assert_close(contrastive_loss(features, labels + 7, form=form), contrastive_loss(features, labels, form=form))


def test_base_temperature_only_scales():
    features = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(3))
    plain = contrastive_loss(features, temperature=0.2)
    torch.testing.assert_close(contrastive_loss(features, temperature=0.2, base_temperature=0.07), plain * 0.2 / 0.07)


@pytest.mark.parametrize("form", ["out", "in"])
@pytest.mark.parametrize("temperature", [0.07, 0.01])
def test_identical_embeddings_have_finite_gradients(form, temperature):
    features = torch.ones(8, 2, 16, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for key in (None, labels):
        loss = contrastive_loss(features, key, temperature=temperature, form=form)
        (grad,) = torch.autograd.grad(loss, features)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_stable_at_tiny_temperature():
    # s_ij up to 1e4: a naive exp would overflow to inf.
    features = torch.randn(8, 2, 4, generator=torch.Generator().manual_seed(4), requires_grad=True)
    loss = contrastive_loss(features, temperature=1e-4)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()


def test_no_positive_anywhere_is_an_error():
    with pytest.raises(ValueError, match="no anchor has a positive"):
        contrastive_loss(torch.randn(4, 1, 3))
    with pytest.raises(ValueError, match="no anchor has a positive"):
        contrastive_loss(torch.randn(3, 1, 3), torch.tensor([0, 1, 2]))


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="form"):
        contrastive_loss(torch.randn(2, 2, 3), form="mid")
    with pytest.raises(ValueError, match=r"\(N, V, D\)"):
        contrastive_loss(torch.randn(4, 3))
    with pytest.raises(ValueError, match="labels"):
        contrastive_loss(torch.randn(4, 2, 3), torch.zeros(3, dtype=torch.long))


def test_autocast_does_not_lower_the_precision():
    features = torch.randn(32, 2, 16, generator=torch.Generator().manual_seed(5))
    expected = contrastive_loss(features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = contrastive_loss(features)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)


def test_supervised_cross_entropy_matches_loop():
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(5, 2, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (5,), generator=generator)
    terms = [
        -(logits[n, v, labels[n]] - torch.log(sum(torch.exp(logits[n, v, k]) for k in range(4))))
        for n in range(5)
        for v in range(2)
    ]
    torch.testing.assert_close(supervised_cross_entropy(logits, labels), sum(terms) / len(terms))


def test_the_three_methods_train_these_objectives():
    # train/methods.py's SimCLR, SupCon and SupCE: their views, augmentation and loss.
    settings = PretrainConfig()
    generator = torch.Generator().manual_seed(7)
    embeddings = F.normalize(torch.randn(12, 8, generator=generator), dim=-1)  # (n·V, D) as the network gives them
    logits = torch.randn(6, 3, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    simclr, supcon, supce = get_method("simclr"), get_method("supcon"), get_method("supce")
    assert [(m.n_views(settings), m.augmentation) for m in (simclr, supcon, supce)] == [
        (2, "contrastive"), (2, "contrastive"), (1, "supervised")]
    two_views, one_view = StepBatch(torch.zeros(6, 2, 1), labels, 2), StepBatch(torch.zeros(6, 1, 1), labels, 1)
    for method, positives in ((simclr, None), (supcon, labels)):
        expected = contrastive_loss(embeddings.view(6, 2, 8), positives, settings.temperature[method.name],
                                    settings.base_temperature, settings.loss_form)
        torch.testing.assert_close(method.loss(embeddings, two_views, MethodState(), settings)[0], expected)
    torch.testing.assert_close(supce.loss(logits, one_view, MethodState(), settings)[0], F.cross_entropy(logits, labels))
