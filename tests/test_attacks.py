"""FGSM / PGD: closed form, slow references, ε-ball and box invariants, state left untouched, errors."""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.analysis.attacks import (
    ATTACKS,
    AttackInputError,
    RobustnessCurve,
    fgsm,
    find_normalization,
    input_gradient,
    pgd,
    robust_accuracy,
)
from contrastlab.models import classifier, linear_classifier, tiny_cnn
from contrastlab.models.batchnorm import fold_batchnorm, folded_to_channels_last
from contrastlab.registry import UnknownNameError

MEAN = [0.5, 0.4, 0.3]
STD = [0.25, 0.2, 0.3]
N_CLASSES = 5


def make_classifier(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    encoder = tiny_cnn(width=4, mean=MEAN, std=STD)
    return classifier(encoder, linear_classifier(encoder.feature_dim, N_CLASSES)).to(dtype)


def make_batch(n: int = 12, seed: int = 1, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels in [0, 1] with some exactly 0 and 1, so the [0, 1] clamp is exercised."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 8, 8, generator=generator, dtype=dtype)
    images[:, 0, :2] = 0.0
    images[:, 1, :2] = 1.0
    labels = torch.randint(0, N_CLASSES, (n,), generator=generator)
    return images, labels


def attack(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    return fgsm(model, images, labels, eps) if name == "fgsm" else pgd(model, images, labels, eps, steps=4, seed=0)


# --------------------------------------------------------------------------- closed form and references


def test_fgsm_on_linear_softmax_equals_closed_form():
    """For logits z = Wx + b, ∇ₓ CE = Wᵀ(softmax(z) − e_y): x̃ = clip(x + ε·sign(Wᵀ(p − e_y)), 0, 1)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4)).double()
    images = torch.rand(10, 2, 3, 3, dtype=torch.float64)
    labels = torch.randint(0, 4, (10,))
    eps = 0.07

    x = images.reshape(10, -1).numpy()
    w, b = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    z = x @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    gradient = (p - np.eye(4)[labels.numpy()]) @ w
    expected = np.clip(x + eps * np.sign(gradient), 0, 1).reshape(images.shape)

    np.testing.assert_allclose(fgsm(model, images, labels, eps).numpy(), expected, rtol=0, atol=1e-12)


def _single_sample_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    F.cross_entropy(model(x[None]), y[None]).backward()
    return x.grad


def test_fgsm_and_pgd_match_slow_per_sample_references():
    """References written from the formulas, one sample at a time (also checks batch independence in eval mode)."""
    model = make_classifier(dtype=torch.float64).eval()
    images, labels = make_batch(6, dtype=torch.float64)
    eps, steps, alpha = 6 / 255, 5, 2 / 255

    reference_fgsm, reference_pgd = [], []
    for x, y in zip(images, labels):
        reference_fgsm.append(torch.clamp(x + eps * _single_sample_gradient(model, x, y).sign(), 0, 1))
        x_adv = x.clone()
        for _ in range(steps):
            x_adv = x_adv + alpha * _single_sample_gradient(model, x_adv, y).sign()
            x_adv = torch.clamp(torch.clamp(x_adv, x - eps, x + eps), 0, 1)  # ε-ball, then the [0, 1] box
        reference_pgd.append(x_adv)
    model.zero_grad(set_to_none=True)

    torch.testing.assert_close(fgsm(model, images, labels, eps), torch.stack(reference_fgsm), rtol=0, atol=1e-12)
    result = pgd(model, images, labels, eps, steps=steps, step_size=alpha, random_start=False)
    torch.testing.assert_close(result, torch.stack(reference_pgd), rtol=0, atol=1e-12)


def test_fgsm_normalized_space_matches_the_original_formula():
    """x̃_n = x_n + ε·sign ∇_{x_n} CE with x_n = (x − mean)/std, no clamp, returned as x̃_n·std + mean."""
    model = make_classifier(dtype=torch.float64).eval()
    images, labels = make_batch(8, dtype=torch.float64)
    eps = 0.5
    mean, std = model[0].normalize.mean, model[0].normalize.std  # (1, 3, 1, 1), MEAN/STD rounded to float32

    on_normalized = copy.deepcopy(model)
    on_normalized[0].normalize = nn.Identity()  # the same network, fed normalized inputs directly
    x_n = ((images - mean) / std).requires_grad_(True)
    F.cross_entropy(on_normalized(x_n), labels, reduction="sum").backward()
    expected = (x_n.detach() + eps * x_n.grad.sign()) * std + mean

    result = fgsm(model, images, labels, eps, space="normalized")
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-12)
    explicit = fgsm(model, images, labels, eps, space="normalized", normalization=(MEAN, STD))
    torch.testing.assert_close(explicit, expected, rtol=0, atol=1e-7)  # the buffers hold float32-rounded values
    # the effective pixel budget is ε·std per channel, and nothing is clamped
    assert torch.allclose((result - images).abs().amax(dim=(0, 2, 3)), eps * std.flatten())
    assert result.min() < 0 or result.max() > 1


def test_find_normalization_finds_the_encoder_buffers():
    model = make_classifier()
    mean, std = find_normalization(model)
    assert mean is model[0].normalize.mean and std is model[0].normalize.std


def test_pgd_normalized_space_stays_in_the_scaled_ball():
    model = make_classifier()
    images, labels = make_batch()
    eps = 0.3
    result = pgd(model, images, labels, eps, steps=3, seed=0, space="normalized")
    std = torch.tensor(STD).view(1, 3, 1, 1)
    assert bool(((result - images).abs() <= eps * std + 1e-6).all())


# --------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
@pytest.mark.parametrize("eps", [1 / 255, 8 / 255, 0.5])
def test_attacks_stay_in_the_eps_ball_and_in_the_unit_box(name, eps):
    model = make_classifier()
    images, labels = make_batch()
    result = attack(name, model, images, labels, eps)
    assert result.shape == images.shape and result.dtype == images.dtype
    assert float((result - images).abs().max()) <= eps + 1e-6  # float32 rounding of x ± ε
    assert float(result.min()) >= 0.0 and float(result.max()) <= 1.0
    assert not torch.equal(result, images)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_eps_zero_returns_the_input(name):
    model = make_classifier()
    images, labels = make_batch()
    result = attack(name, model, images, labels, 0.0)
    assert torch.equal(result, images)
    assert result.data_ptr() != images.data_ptr()


def test_pgd_random_start_is_reproducible_by_seed():
    model = make_classifier()
    images, labels = make_batch()
    first = pgd(model, images, labels, 4 / 255, steps=2, seed=7)
    again = pgd(model, images, labels, 4 / 255, steps=2, seed=7)
    other = pgd(model, images, labels, 4 / 255, steps=2, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def _trained_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny CNN trained for a few steps on three close, noisy class prototypes (8×8 RGB).

    The prototypes differ by at most ±0.1 per pixel, so a few grey levels of ε already hurt.
    """
    generator = torch.Generator().manual_seed(0)
    prototypes = 0.5 + 0.2 * (torch.rand(3, 3, 8, 8, generator=generator) - 0.5)
    labels = torch.arange(3).repeat_interleave(32)
    images = (prototypes[labels] + 0.05 * torch.randn(96, 3, 8, 8, generator=generator)).clamp(0, 1)
    torch.manual_seed(0)
    encoder = tiny_cnn(width=8, mean=MEAN, std=STD)
    model = classifier(encoder, linear_classifier(encoder.feature_dim, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model.eval(), images, labels


def test_pgd_loss_at_least_fgsm_loss_on_a_trained_model():
    model, images, labels = _trained_model()
    with torch.no_grad():
        clean_accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert clean_accuracy > 0.9  # the comparison is meaningful only on a model that learned something
    for eps in (2 / 255, 6 / 255):
        fgsm_curve = robust_accuracy(model, images, labels, [eps], attack="fgsm")
        pgd_curve = robust_accuracy(model, images, labels, [eps], attack="pgd", steps=10, seed=0)
        clean = robust_accuracy(model, images, labels, [0.0])
        assert fgsm_curve.loss[0] > clean.loss[0]
        assert pgd_curve.loss[0] >= fgsm_curve.loss[0]
        assert pgd_curve.accuracy[0] <= fgsm_curve.accuracy[0]


def _snapshot(model: nn.Module) -> tuple[list[bool], list, dict[str, torch.Tensor]]:
    modes = [m.training for m in model.modules()]
    grads = [p.grad for p in model.parameters()]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    return modes, grads, buffers


@pytest.mark.parametrize("run", ["fgsm", "pgd", "sweep"])
def test_mode_grads_buffers_and_inputs_left_as_they_were(run):
    model = make_classifier()
    model.train()
    model[1].eval()  # mixed modes: encoder training, head in eval
    for i, parameter in enumerate(model.parameters()):
        parameter.grad = torch.randn_like(parameter) if i % 2 == 0 else None
    grad_values = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    modes, grads, buffers = _snapshot(model)
    images, labels = make_batch()
    images_before, labels_before = images.clone(), labels.clone()

    if run == "fgsm":
        fgsm(model, images, labels, 4 / 255)
    elif run == "pgd":
        pgd(model, images, labels, 4 / 255, steps=2, seed=0)
    else:
        robust_accuracy(model, images, labels, [0, 2 / 255], attack="pgd", batch_size=5, steps=2, seed=0)

    new_modes, new_grads, new_buffers = _snapshot(model)
    assert new_modes == modes
    for before, after, value in zip(grads, new_grads, grad_values):
        assert after is before
        if value is not None:
            assert torch.equal(after, value)
    for key, value in buffers.items():  # eval mode: BN running statistics untouched
        assert torch.equal(new_buffers[key], value), key
    assert torch.equal(images, images_before) and torch.equal(labels, labels_before)
    assert not images.requires_grad


# --------------------------------------------------------------------------- robust_accuracy


def _accuracy_and_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits = model.eval()(images)
    return (logits.argmax(1) == labels).double().mean().item(), F.cross_entropy(logits.double(), labels).item()


def test_robust_accuracy_matches_direct_evaluation_and_ignores_batch_size():
    model = make_classifier().eval()
    images, labels = make_batch(13)
    eps_values = [0.0, 3 / 255, 10 / 255]
    curve = robust_accuracy(model, images, labels, eps_values, batch_size=5)
    assert isinstance(curve, RobustnessCurve)
    assert curve.eps.shape == curve.accuracy.shape == curve.loss.shape == (3,)
    np.testing.assert_allclose(curve.eps, eps_values)

    expected = [_accuracy_and_loss(model, images, labels)]
    expected += [_accuracy_and_loss(model, fgsm(model, images, labels, eps), labels) for eps in eps_values[1:]]
    np.testing.assert_allclose(curve.accuracy, [a for a, _ in expected], atol=1e-12)
    np.testing.assert_allclose(curve.loss, [l for _, l in expected], rtol=1e-6)

    one_batch = robust_accuracy(model, images, labels, np.array(eps_values), batch_size=256, progress=True)
    np.testing.assert_allclose(one_batch.accuracy, curve.accuracy, atol=1e-12)
    np.testing.assert_allclose(one_batch.loss, curve.loss, rtol=1e-6)


def test_robust_accuracy_pgd_is_reproducible_with_a_seed():
    model = make_classifier()
    images, labels = make_batch(13)
    first = robust_accuracy(model, images, labels, torch.tensor([2 / 255, 8 / 255]), attack="pgd", batch_size=4, steps=2, seed=3)
    again = robust_accuracy(model, images, labels, [2 / 255, 8 / 255], attack="pgd", batch_size=4, steps=2, seed=3)
    np.testing.assert_array_equal(first.loss, again.loss)
    np.testing.assert_array_equal(first.accuracy, again.accuracy)
    # each ε's result does not depend on the other ε values in the sweep
    alone = robust_accuracy(model, images, labels, [8 / 255], attack="pgd", batch_size=4, steps=2, seed=3)
    assert alone.loss[0] == first.loss[1]


def test_attack_registry_lists_both_attacks():
    assert ATTACKS == {"fgsm": fgsm, "pgd": pgd}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_attacks_reject_bad_inputs(name):
    model = make_classifier()
    images, labels = make_batch()
    with pytest.raises(AttackInputError, match="eps"):
        attack(name, model, images, labels, -1 / 255)
    with pytest.raises(AttackInputError, match="eps"):
        attack(name, model, images, labels, float("nan"))
    with pytest.raises(AttackInputError, match=r"\[0, 1\]"):
        attack(name, model, images * 2, labels, 1 / 255)
    with pytest.raises(AttackInputError, match=r"\[0, 1\]"):
        attack(name, model, images - 0.5, labels, 1 / 255)
    with pytest.raises(AttackInputError, match="labels must have shape"):
        attack(name, model, images, labels[:-1], 1 / 255)
    with pytest.raises(AttackInputError, match="labels must have shape"):
        attack(name, model, images, labels[:, None], 1 / 255)
    with pytest.raises(AttackInputError, match="integer"):
        attack(name, model, images, labels.float(), 1 / 255)
    with pytest.raises(AttackInputError, match="floating-point"):
        attack(name, model, (images * 255).to(torch.uint8), labels, 1 / 255)
    with pytest.raises(AttackInputError, match=r"lie in \[0, 5\)"):
        attack(name, model, images, torch.full_like(labels, N_CLASSES), 1 / 255)


def test_option_errors():
    model = make_classifier()
    images, labels = make_batch()
    with pytest.raises(AttackInputError, match="space"):
        fgsm(model, images, labels, 1 / 255, space="bogus")
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, N_CLASSES))
    with pytest.raises(AttackInputError, match="normalization"):
        fgsm(plain, images, labels, 1 / 255, space="normalized")
    with pytest.raises(AttackInputError, match="steps"):
        pgd(model, images, labels, 1 / 255, steps=0)
    with pytest.raises(UnknownNameError, match="fgsm, pgd"):
        robust_accuracy(model, images, labels, [1 / 255], attack="cw")
    with pytest.raises(AttackInputError, match="eps"):
        robust_accuracy(model, images, labels, [0.0, -1 / 255])
    with pytest.raises(AttackInputError, match="at least one"):
        robust_accuracy(model, images, labels, [])
    with pytest.raises(AttackInputError, match="batch_size"):
        robust_accuracy(model, images, labels, [1 / 255], batch_size=0)


# --------------------------------------------------------------------------- precision and BN folding


def test_precision_is_explicit_and_bf16_stays_close():
    model = make_classifier()
    images, labels = make_batch(16)
    with pytest.raises(AttackInputError, match="'fp32', 'bf16'"):
        fgsm(model, images, labels, 1 / 255, precision="auto")
    with pytest.raises(AttackInputError, match="'fp32', 'bf16'"):
        robust_accuracy(model, images, labels, [0.0], precision="fp16")
    fp32 = robust_accuracy(model, images, labels, [0.0, 2 / 255])
    bf16 = robust_accuracy(model, images, labels, [0.0, 2 / 255], precision="bf16")
    assert bf16.loss.dtype == np.float64
    np.testing.assert_allclose(bf16.loss, fp32.loss, rtol=0.05)
    adversarial = pgd(model, images, labels, 4 / 255, steps=3, seed=0, precision="bf16")
    assert (adversarial - images).abs().max() <= 4 / 255 + 1e-6


def test_a_batchnorm_folded_sweep_equals_the_plain_one():
    model = make_classifier(dtype=torch.float64)
    images, labels = make_batch(16, dtype=torch.float64)
    eps = [0.0, 2 / 255, 8 / 255]
    for attack, kwargs in (("fgsm", {}), ("pgd", {"steps": 3, "seed": 0}), ("fgsm", {"space": "normalized"})):
        folded = robust_accuracy(model, images, labels, eps, attack=attack, fold_bn=True, **kwargs)
        plain = robust_accuracy(model, images, labels, eps, attack=attack, fold_bn=False, **kwargs)
        np.testing.assert_array_equal(folded.accuracy, plain.accuracy)
        np.testing.assert_allclose(folded.loss, plain.loss, rtol=1e-9)


# --------------------------------------------------------------------------- the sweep against a per-(ε, batch) loop


def _reference_sweep(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps_values, attack_name: str, batch_size: int,
                     fold_bn: bool, channels_last: bool, **kwargs) -> tuple[list[float], list[float]]:
    """The straightforward sweep: ε outer, batches inner, one fgsm/pgd call per (ε, batch),
    an int seed as one fresh generator per ε shared by the batches in order; the same model
    view and memory format as robust_accuracy's, so the numbers can agree bit for bit."""
    seed = kwargs.pop("seed", None)
    if kwargs.get("space") == "normalized":
        kwargs["normalization"] = find_normalization(model)
    evaluated = fold_batchnorm(model)[0] if fold_bn else model
    if channels_last:
        folded_to_channels_last(evaluated)
        images = images.contiguous(memory_format=torch.channels_last)
    accuracy, loss = [], []
    for eps in eps_values:
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        correct, total = 0, 0.0
        for start in range(0, images.shape[0], batch_size):
            x, y = images[start : start + batch_size], labels[start : start + batch_size]
            if eps > 0:
                x = fgsm(evaluated, x, y, eps, **kwargs) if attack_name == "fgsm" else pgd(evaluated, x, y, eps, seed=generator, **kwargs)
            with torch.no_grad():
                logits = evaluated(x)
            total += F.cross_entropy(logits.double(), y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum())
        accuracy.append(correct / images.shape[0])
        loss.append(total / images.shape[0])
    return accuracy, loss


def _model_with_running_statistics() -> nn.Module:
    """make_classifier with BN running statistics away from (0, 1), so folding changes the weights."""
    model = make_classifier()
    generator = torch.Generator().manual_seed(5)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize("fold_bn, channels_last", [(True, True), (True, False), (False, False), (False, True)])
@pytest.mark.parametrize("space", ["pixel", "normalized"])
@pytest.mark.parametrize("name, kwargs", [("fgsm", {}), ("pgd", {"steps": 2, "seed": 4})])
def test_the_sweep_equals_a_per_eps_and_batch_loop_bit_for_bit(name, kwargs, space, fold_bn, channels_last):
    """FGSM reuses a batch's gradient across ε; the curve is still the per-(ε, batch) loop's, exactly."""
    model = _model_with_running_statistics()
    images, labels = make_batch(13)
    eps_values = [2 / 255, 0.0, 8 / 255, 0.3]  # ε = 0 in the middle; three batches, the last one short
    curve = robust_accuracy(model, images, labels, eps_values, attack=name, batch_size=5, fold_bn=fold_bn, channels_last=channels_last,
                            space=space, **kwargs)
    accuracy, loss = _reference_sweep(model, images, labels, eps_values, name, 5, fold_bn, channels_last, space=space, **kwargs)
    np.testing.assert_array_equal(curve.accuracy, accuracy)
    np.testing.assert_array_equal(curve.loss, loss)
    assert len(set(loss)) == len(loss)  # every ε attacked something


def test_fgsm_sweep_takes_one_gradient_per_batch_and_advances_per_eps_and_batch(monkeypatch):
    import contrastlab.analysis.attacks as attacks_module

    calls, bars = [], []
    original = attacks_module._input_gradient  # the sweep's gradient, without the per-call label check
    monkeypatch.setattr(attacks_module, "_input_gradient", lambda *args, **kw: calls.append(1) or original(*args, **kw))

    @contextlib.contextmanager
    def spy_bar(total, description, enabled=False):
        bars.append([total, 0])
        yield lambda n=1: bars[-1].__setitem__(1, bars[-1][1] + n)

    monkeypatch.setattr(attacks_module, "progress_bar", spy_bar)
    model = make_classifier()
    images, labels = make_batch(13)
    robust_accuracy(model, images, labels, [0.0, 1 / 255, 4 / 255, 8 / 255], batch_size=5)
    assert len(calls) == 3  # one per batch, not one per (ε, batch)
    assert bars == [[12, 12]]
    robust_accuracy(model, images, labels, [0.0], batch_size=5)
    assert len(calls) == 3  # ε = 0 alone needs no gradient
    with pytest.raises(AttackInputError, match="no seed"):
        robust_accuracy(model, images, labels, [1 / 255], seed=0)


def test_fgsm_with_a_given_gradient_equals_fgsm():
    model = make_classifier().eval()
    images, labels = make_batch()
    gradient = input_gradient(model, images, labels)
    for space in ("pixel", "normalized"):
        assert torch.equal(fgsm(model, images, labels, 3 / 255, space=space, gradient=gradient), fgsm(model, images, labels, 3 / 255, space=space))
    with pytest.raises(AttackInputError, match="gradient of shape"):
        fgsm(model, images, labels, 3 / 255, gradient=gradient[:-1])
