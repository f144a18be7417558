"""Loss landscapes: direction normalization, the surface against a by-hand evaluation, restore, resume."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.analysis.checks import LandscapeInputError, parameter_mask
from contrastlab.analysis.directions import random_directions
from contrastlab.analysis.landscape import SurfaceSettings, loss_surface
from contrastlab.analysis.surface_grid import Surface, load_surface, save_surface
from contrastlab.analysis.surface_eval import CPU_ACTIVATION_BUDGET_BYTES, CPU_BATCH_RANGE, cpu_batch_size
from contrastlab.errors import RunDirectoryError
from contrastlab.models import classifier, linear_classifier, resnet18, tiny_cnn
from contrastlab.models.batchnorm import fold_batchnorm, fold_batchnorm_differentiable

MEAN = [0.5, 0.4, 0.3]
STD = [0.25, 0.2, 0.3]
N_CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize_batchnorm(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine parameters, so an eval-mode BN is not the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(c, generator=generator) * 0.4 - 0.2)


def make_classifier(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    encoder = tiny_cnn(width=4, mean=MEAN, std=STD)
    model = classifier(encoder, linear_classifier(encoder.feature_dim, N_CLASSES))
    randomize_batchnorm(model, seed)
    return model.to(dtype).eval()


def make_resnet(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    encoder = resnet18(width=4, mean=MEAN, std=STD)
    model = classifier(encoder, linear_classifier(encoder.feature_dim, N_CLASSES))
    randomize_batchnorm(model, seed)
    return model.eval()


def make_batch(n: int = 24, seed: int = 1, size: int = 8, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=generator, dtype=dtype)
    labels = torch.randint(0, N_CLASSES, (n,), generator=generator)
    return images, labels


def reference_point(model, images, labels, directions, coefficients) -> tuple[float, float]:
    """Mean CE and accuracy after setting θ* + Σ c_k·d_k by hand on a copy of the model."""
    moved = copy.deepcopy(model).eval()
    with torch.no_grad():
        for parameter, *steps in zip(moved.parameters(), *directions):
            parameter.copy_(parameter + sum(c * d for c, d in zip(coefficients, steps)))
        logits = moved(images).double()
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).double().mean().item()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def assert_bit_identical(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


# --------------------------------------------------------------------------- directions


def test_filter_normalization_holds_slice_by_slice_and_biasbn_directions_are_zero():
    model = make_resnet()
    weights = list(model.parameters())
    directions = random_directions(model, n=2, seed=3)
    assert len(directions) == 2
    n_multi = 0
    for direction in directions:
        assert len(direction) == len(weights)
        for d, w in zip(direction, weights):
            assert d.shape == w.shape and d.dtype == w.dtype and d.device == w.device
            if w.ndim <= 1:
                assert not d.any()  # biases, BN gamma and beta
                continue
            n_multi += 1
            for i in range(w.shape[0]):
                assert torch.linalg.vector_norm(d[i]).item() == pytest.approx(torch.linalg.vector_norm(w[i]).item(), rel=1e-5)
    assert n_multi > 20
    # Different directions, and not the weights themselves.
    conv = [i for i, w in enumerate(weights) if w.ndim == 4][0]
    assert not torch.allclose(directions[0][conv], directions[1][conv])
    assert not torch.allclose(directions[0][conv], weights[conv])


def test_layer_and_none_normalizations_and_the_gaussian_stream():
    model = make_classifier()
    weights = [p.detach() for p in model.parameters()]
    raw = random_directions(model, n=1, seed=5, normalization="none", ignore="none")[0]
    generator = torch.Generator().manual_seed(5)
    for d, w in zip(raw, weights):  # N(0, 1) in parameter order from one seeded CPU generator
        assert torch.equal(d, torch.randn(w.shape, generator=generator))

    layer = random_directions(model, n=1, seed=5, normalization="layer", ignore="none")[0]
    for d, r, w in zip(layer, raw, weights):
        assert torch.linalg.vector_norm(d).item() == pytest.approx(torch.linalg.vector_norm(w).item(), rel=1e-5)
        # a positive rescaling of the same draw
        cosine = (d * r).sum() / (torch.linalg.vector_norm(d) * torch.linalg.vector_norm(r))
        assert cosine.item() == pytest.approx(1.0, abs=1e-5)

    # ignore="none" with filter normalization: each entry of a 1-D parameter is its own slice.
    filtered = random_directions(model, n=1, seed=5, normalization="filter", ignore="none")[0]
    for d, r, w in zip(filtered, raw, weights):
        if w.ndim == 1:
            torch.testing.assert_close(d, torch.sign(r) * w.abs())


def test_directions_are_reproducible_under_the_seed():
    model = make_classifier()
    first = random_directions(model, seed=7)
    second = random_directions(model, seed=7)
    other = random_directions(model, seed=8)
    for a, b, c in zip(first[0], second[0], other[0]):
        assert torch.equal(a, b)
        if a.ndim > 1:
            assert not torch.equal(a, c)


def test_parameter_subset_gives_zero_elsewhere_and_the_same_draws_inside():
    model = make_classifier()
    names = [name for name, _ in model.named_parameters()]
    full = random_directions(model, n=2, seed=2)
    probe_only = random_directions(model, n=2, seed=2, params="1.")
    for direction_full, direction_probe in zip(full, probe_only):
        for name, a, b in zip(names, direction_full, direction_probe):
            if name.startswith("1."):
                assert torch.equal(a, b)
            else:
                assert not b.any()
    # Equivalent spellings of the same selection.
    assert parameter_mask(model, "1") == parameter_mask(model, "1.") == parameter_mask(model, lambda n: n.startswith("1."))
    assert parameter_mask(model, ["0.body.0", "1"]) == [n.startswith(("0.body.0.", "1.")) for n in names]
    with pytest.raises(LandscapeInputError, match="selects no parameter"):
        parameter_mask(model, "2")
    with pytest.raises(LandscapeInputError, match="selects no parameter"):
        parameter_mask(model, "1.we")  # a prefix must end at a name boundary


def test_directions_follow_the_parameter_dtype():
    model = make_classifier(dtype=torch.float64)
    for d, w in zip(random_directions(model, n=1)[0], model.parameters()):
        assert d.dtype == torch.float64 and d.shape == w.shape


@pytest.mark.parametrize(
    "kwargs, message",
    [({"n": 0}, "n must be"), ({"normalization": "unit"}, "normalization"), ({"ignore": "bias"}, "ignore")],
)
def test_random_directions_rejects_bad_options(kwargs, message):
    with pytest.raises(LandscapeInputError, match=message):
        random_directions(make_classifier(), **kwargs)


# --------------------------------------------------------------------------- the surface


ENGINES = {
    # name: (direction selection, loss_surface options)
    "whole network, defaults": ("all", {}),
    "whole network, plain": ("all", {"fold_bn": False, "channels_last": False}),
    "whole network, folded NCHW": ("all", {"channels_last": False}),
    "whole network, two workers": ("all", {"workers": 2}),
    "probe only, affine": ("1", {}),
    "probe only, per point": ("1", {"reuse_fixed_head": False}),
}


@pytest.mark.parametrize("engine", list(ENGINES))
def test_surface_points_equal_an_evaluation_by_hand(engine):
    params, options = ENGINES[engine]
    model = make_classifier()
    images, labels = make_batch()
    directions = random_directions(model, n=2, seed=4, params=params)
    xs, ys = np.array([-1.0, 0.0, 0.6]), np.array([-0.5, 0.0, 1.0, 1.5])
    surface = loss_surface(model, images, labels, directions, xs, ys, settings=SurfaceSettings(batch_size=10, **options))
    assert surface.loss.shape == surface.accuracy.shape == (4, 3)  # row = y, column = x
    np.testing.assert_array_equal(surface.xs, xs)
    np.testing.assert_array_equal(surface.ys, ys)
    for row, column in [(0, 0), (1, 1), (2, 2), (3, 0), (0, 2)]:
        loss, accuracy = reference_point(model, images, labels, directions, (xs[column], ys[row]))
        assert surface.loss[row, column] == pytest.approx(loss, rel=1e-5, abs=1e-6)
        assert surface.accuracy[row, column] == pytest.approx(accuracy)


def test_parallel_workers_give_the_same_surface_and_leave_the_model_alone():
    model = make_resnet()
    images, labels = make_batch(n=10)
    directions = random_directions(model, n=2, seed=3)
    grid = (np.array([-1.0, 0.0, 0.5]), np.array([-0.5, 1.0]))
    serial = loss_surface(model, images, labels, directions, *grid, settings=SurfaceSettings(workers=1))
    writes = [p._version for p in model.parameters()]  # only read by parallel workers: no version bump
    parallel = loss_surface(model, images, labels, directions, *grid, settings=SurfaceSettings(workers=2))
    assert [p._version for p in model.parameters()] == writes
    assert torch.get_num_threads() == 1  # restored (the fixture set 1; the workers set 1 as well)
    np.testing.assert_allclose(parallel.loss, serial.loss, rtol=1e-5)
    np.testing.assert_array_equal(parallel.accuracy, serial.accuracy)


def test_an_error_in_a_parallel_worker_reaches_the_caller(tmp_path):
    model = make_classifier()
    images, labels = make_batch()
    directions = random_directions(model, n=2, seed=1)
    # Copied into each worker's model after the one check call: each copy raises in its second point.
    model[1].register_forward_hook(FailAfter(limit=5))
    path = tmp_path / "cut.npy"
    threads = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        loss_surface(model, images, labels, directions, [-1.0, 0.0, 1.0], [-1.0, 1.0], settings=SurfaceSettings(batch_size=12, workers=2, resume_path=path))
    assert torch.get_num_threads() == threads
    assert load_surface(path)[1]["finished"] == 2  # the first round of two points was saved


def test_surface_at_the_origin_is_the_models_own_loss():
    model = make_resnet()
    images, labels = make_batch(n=16, size=8)
    with torch.no_grad():
        logits = model(images).double()
    own_loss = F.cross_entropy(logits, labels).item()
    own_accuracy = (logits.argmax(1) == labels).double().mean().item()
    for params in ("all", "1"):
        directions = random_directions(model, n=2, seed=0, params=params)
        surface = loss_surface(model, images, labels, directions, [-0.5, 0.0], [0.0, 0.5])
        assert surface.loss[0, 1] == pytest.approx(own_loss, rel=1e-5)
        assert surface.accuracy[0, 1] == own_accuracy
        curve = loss_surface(model, images, labels, directions[:1], [0.0, 0.25])
        assert curve.loss.shape == (2,) and curve.ys is None and curve.is_1d
        assert curve.loss[0] == pytest.approx(own_loss, rel=1e-5)


def test_a_moving_tail_after_a_fixed_head_is_evaluated_on_cached_features():
    torch.manual_seed(0)
    encoder = tiny_cnn(width=4)
    randomize_batchnorm(encoder, 0)
    model = nn.Sequential(encoder, nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, N_CLASSES)).eval()
    images, labels = make_batch()
    directions = random_directions(model, n=2, seed=1, params=["1", "3"], normalization="layer", ignore="none")
    calls = []
    encoder.register_forward_hook(lambda *args: calls.append(1))
    xs = ys = np.linspace(-1, 1, 3)
    surface = loss_surface(model, images, labels, directions, xs, ys, settings=SurfaceSettings(batch_size=8))
    assert len(calls) == 3  # the encoder ran once over the samples (3 batches), not once per point
    for row, column in [(0, 0), (1, 2), (2, 1)]:
        loss, accuracy = reference_point(model, images, labels, directions, (xs[column], ys[row]))
        assert surface.loss[row, column] == pytest.approx(loss, rel=1e-5)
        assert surface.accuracy[row, column] == pytest.approx(accuracy)


def test_closed_form_for_a_zero_linear_model():
    """θ* = 0 and a direction that raises class 0's bias: logits (x, 0, …, 0) for every sample."""
    n_features, n_classes = 6, 4
    model = nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_classes))
    nn.init.zeros_(model[1].weight)
    nn.init.zeros_(model[1].bias)
    images = torch.rand(10, 2, 3)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 0])
    bias_step = torch.zeros(n_classes)
    bias_step[0] = 1.0
    direction = [torch.zeros(n_classes, n_features), bias_step]
    xs = np.array([-2.0, 0.0, 0.5, 3.0])
    share_0 = (labels == 0).double().mean().item()
    expected = [math.log(math.exp(x) + n_classes - 1) - share_0 * x for x in xs]
    for options in ({}, {"reuse_fixed_head": False}):
        curve = loss_surface(model, images, labels, [direction], xs, settings=SurfaceSettings(**options))
        np.testing.assert_allclose(curve.loss, expected, rtol=1e-6)
        # ties at x = 0 go to class 0; for x < 0 class 1 wins (first of the tied maxima)
        np.testing.assert_allclose(curve.accuracy, [0.2, share_0, share_0, share_0])
    assert curve.loss[1] == pytest.approx(math.log(n_classes))


def test_surface_does_not_depend_on_batch_size_or_sample_order():
    model = make_classifier()
    images, labels = make_batch()
    directions = random_directions(model, n=2, seed=6)
    grid = (np.array([-0.5, 0.5]), np.array([0.0, 1.0]))
    reference = loss_surface(model, images, labels, directions, *grid, settings=SurfaceSettings(batch_size=5))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    shuffled = loss_surface(model, images[order], labels[order], directions, *grid, settings=SurfaceSettings(batch_size=24))
    np.testing.assert_allclose(shuffled.loss, reference.loss, rtol=1e-5)
    np.testing.assert_array_equal(shuffled.accuracy, reference.accuracy)


def test_the_cpu_batch_keeps_the_largest_activation_within_the_budget():
    # One sample of a width-4 ResNet at 8×8: the largest activation is 4·8·8 floats = 1 KiB, so the
    # budget allows 2048 samples (clamped to 256); a 2-channel image of 1024×1024 floats (8 MiB) gets 32.
    small = make_resnet()
    big = nn.Sequential(nn.Identity())
    with torch.inference_mode():
        assert cpu_batch_size(small, torch.rand(1, 3, 8, 8)) == CPU_BATCH_RANGE[1]
        assert cpu_batch_size(big, torch.rand(1, 2, 1024, 1024)) == CPU_BATCH_RANGE[0]
        # in between: exactly the budget over the bytes of the largest leaf output (here the 16-channel conv)
        middle = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 3, padding=1))
        per_sample = 16 * 32 * 32 * 4
        assert cpu_batch_size(middle, torch.rand(1, 3, 32, 32)) == CPU_ACTIVATION_BUDGET_BYTES // per_sample
    assert not any(m._forward_hooks for m in middle.modules())  # the measuring hooks are gone


def test_the_default_cpu_batch_gives_the_surface_of_explicit_batches():
    model = make_resnet()
    images, labels = make_batch()
    directions = random_directions(model, n=2, seed=6)
    grid = (np.array([-0.5, 0.5]), np.array([0.0, 1.0]))
    default = loss_surface(model, images, labels, directions, *grid)
    explicit = loss_surface(model, images, labels, directions, *grid, settings=SurfaceSettings(batch_size=7))
    np.testing.assert_allclose(default.loss, explicit.loss, rtol=1e-5)
    np.testing.assert_array_equal(default.accuracy, explicit.accuracy)


def test_bf16_precision_stays_close_to_fp32():
    model = make_classifier()
    images, labels = make_batch()
    directions = random_directions(model, n=1, seed=2)
    exact = loss_surface(model, images, labels, directions, [0.0, 0.5])
    rough = loss_surface(model, images, labels, directions, [0.0, 0.5], settings=SurfaceSettings(precision="bf16"))
    np.testing.assert_allclose(rough.loss, exact.loss, rtol=0.05)


# --------------------------------------------------------------------------- state left untouched


def test_parameters_buffers_and_modes_are_restored_bit_identically():
    model = make_classifier()
    model.train()
    model[0].body[1].eval()  # a mixed mode must come back as it was
    modes = [m.training for m in model.modules()]
    before = snapshot(model)
    images, labels = make_batch()
    directions = random_directions(model, n=2, seed=1, ignore="none")  # BN gamma/beta move too
    loss_surface(model, images, labels, directions, [-1.0, 0.3, 1.0], [-1.0, 0.7])
    assert_bit_identical(model, before)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())


class FailAfter:
    """A forward hook that raises on its ``limit``-th call (simulates Ctrl-C or a crash mid-grid)."""

    def __init__(self, limit: int):
        self.limit, self.calls = limit, 0

    def __call__(self, module, inputs, output):
        self.calls += 1
        if self.limit is not None and self.calls >= self.limit:
            raise KeyboardInterrupt("cut")


@pytest.mark.parametrize("fold_bn", [True, False])
def test_parameters_are_restored_after_an_exception_mid_grid(fold_bn):
    model = make_classifier()
    before = snapshot(model)
    images, labels = make_batch()
    directions = random_directions(model, n=2, seed=1)
    handle = model[1].register_forward_hook(FailAfter(limit=6))
    with pytest.raises(KeyboardInterrupt):
        loss_surface(model, images, labels, directions, [-1.0, 0.0, 1.0], [-1.0, 1.0], settings=SurfaceSettings(batch_size=12, fold_bn=fold_bn))
    handle.remove()
    assert_bit_identical(model, before)


def test_a_cut_grid_resumes_to_the_same_result(tmp_path):
    model = make_classifier()
    images, labels = make_batch()
    directions = random_directions(model, n=2, seed=9)
    xs, ys = np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)
    uninterrupted = loss_surface(model, images, labels, directions, xs, ys, settings=SurfaceSettings(batch_size=12))

    path = tmp_path / "surface.npy"
    # 1 check call, then 2 batches per point: the 12th call is inside the 6th point.
    cut = FailAfter(limit=12)
    handle = model[1].register_forward_hook(cut)
    with pytest.raises(KeyboardInterrupt):
        loss_surface(model, images, labels, directions, xs, ys, settings=SurfaceSettings(batch_size=12, resume_path=path, save_every=1e9))
    handle.remove()
    partial, meta = load_surface(path)
    # Points are recorded a row at a time (one read-back per row): the cut keeps the first row's 4.
    assert meta["finished"] == 4 and np.isfinite(partial.loss).sum() == 4

    counter = FailAfter(limit=None)
    handle = model[1].register_forward_hook(counter)
    resumed = loss_surface(model, images, labels, directions, xs, ys, settings=SurfaceSettings(batch_size=12, resume_path=path, save_every=0))
    assert counter.calls == 1 + 2 * (12 - 4)  # only the unfinished points were evaluated
    np.testing.assert_array_equal(resumed.loss, uninterrupted.loss)
    np.testing.assert_array_equal(resumed.accuracy, uninterrupted.accuracy)

    counter.calls = 0
    again = loss_surface(model, images, labels, directions, xs, ys, settings=SurfaceSettings(batch_size=12, resume_path=path))
    assert counter.calls == 0  # a finished grid is read back, not recomputed
    np.testing.assert_array_equal(again.loss, uninterrupted.loss)
    handle.remove()

    with pytest.raises(RunDirectoryError, match="other inputs"):
        loss_surface(model, images, labels, directions, xs, ys[:2], settings=SurfaceSettings(resume_path=path))


def test_a_cut_affine_probe_grid_resumes_too(tmp_path):
    model = make_classifier()
    images, labels = make_batch()
    directions = random_directions(model, n=2, seed=9, params="1")
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)
    full = loss_surface(model, images, labels, directions, xs, ys)
    path = tmp_path / "probe.npy"
    partial = Surface(xs, ys, np.where(np.arange(25).reshape(5, 5) < 7, full.loss, np.nan), full.accuracy)
    # A partial file from an earlier run is resumed only with the same fingerprint...
    loss_surface(model, images, labels, directions, xs, ys, settings=SurfaceSettings(resume_path=path))
    surface, meta = load_surface(path)
    np.testing.assert_allclose(surface.loss, full.loss, rtol=1e-12)
    save_surface(path, partial, {**meta, "finished": 7})
    resumed = loss_surface(model, images, labels, directions, xs, ys, settings=SurfaceSettings(resume_path=path))
    np.testing.assert_allclose(resumed.loss, full.loss, rtol=1e-12)


def test_surface_files_round_trip(tmp_path):
    curve = Surface(np.array([0.0, 1.0]), None, np.array([1.5, 2.0]), np.array([0.5, 0.25]))
    save_surface(tmp_path / "c.npy", curve, {"method": "SimCLR"})
    loaded, meta = load_surface(tmp_path / "c.npy")
    assert loaded.ys is None and meta["method"] == "SimCLR"
    np.testing.assert_array_equal(loaded.loss, curve.loss)


# --------------------------------------------------------------------------- conv-BN folding


def test_folded_batchnorm_matches_the_plain_model_and_follows_changes():
    model = make_resnet()
    images, _ = make_batch(n=6)
    folded, refresh = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(images), model(images), rtol=1e-4, atol=1e-5)
        conv, bn = model[0].stem[0], model[0].stem[1]
        conv.weight.mul_(1.5)
        bn.bias.add_(0.3)
        bn.running_var.mul_(2.0)
        model[1].weight.add_(0.1)  # shared, not folded: seen without a refresh
        refresh()
        torch.testing.assert_close(folded(images), model(images), rtol=1e-4, atol=1e-5)


def test_differentiable_fold_has_the_models_gradients_and_second_derivatives():
    """fold_batchnorm_differentiable: the same function of the same parameters, so first and
    second derivatives by autograd agree with conv→BN in eval mode (float64, to rounding)."""
    model = make_resnet().double()
    folded = fold_batchnorm_differentiable(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for name, m in folded.named_modules() if "_folded_conv_" not in name)
    assert {id(p) for p in folded.parameters()} == {id(p) for p in model.parameters()}
    images, labels = make_batch(n=6, dtype=torch.float64)
    parameters = list(model.parameters())
    vector = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i, p in enumerate(parameters)]

    def derivatives(module):
        loss = F.cross_entropy(module(images), labels)
        grads = torch.autograd.grad(loss, parameters, create_graph=True)
        hvp = torch.autograd.grad(grads, parameters, grad_outputs=vector)
        return loss, grads, hvp

    (loss, grads, hvp), (loss_f, grads_f, hvp_f) = derivatives(model), derivatives(folded)
    torch.testing.assert_close(loss_f, loss, rtol=1e-12, atol=0)
    for expected, got in [*zip(grads, grads_f), *zip(hvp, hvp_f)]:
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    with torch.no_grad():  # no refresh: the view computes its weights from the live parameters
        model[0].stem[1].weight.mul_(1.7)
        torch.testing.assert_close(folded(images), model(images), rtol=1e-12, atol=1e-12)


def test_an_untraceable_model_is_evaluated_unfolded():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, N_CLASSES)

        def forward(self, x):
            h = self.bn(self.conv(x))
            if h.sum() > 0:  # python control flow on a value: not traceable
                h = -h
            return self.fc(h.mean((2, 3)))

    model = DataDependent().eval()
    randomize_batchnorm(model, 0)
    folded, _ = fold_batchnorm(model)
    assert folded is model and fold_batchnorm_differentiable(model) is model
    images, labels = make_batch()
    directions = random_directions(model, n=1, seed=0)
    curve = loss_surface(model, images, labels, directions, [0.0, 1.0])
    assert curve.loss[1] == pytest.approx(reference_point(model, images, labels, directions, (1.0,))[0], rel=1e-5)


# --------------------------------------------------------------------------- errors


def test_loss_surface_rejects_bad_inputs():
    model = make_classifier()
    images, labels = make_batch()
    two = random_directions(model, n=2)
    with pytest.raises(LandscapeInputError, match="need ys"):
        loss_surface(model, images, labels, two, [0.0])
    with pytest.raises(LandscapeInputError, match="needs two directions"):
        loss_surface(model, images, labels, two[:1], [0.0], [0.0])
    with pytest.raises(LandscapeInputError, match="tensors; the model has"):
        loss_surface(model, images, labels, [two[0][:-1]], [0.0])
    with pytest.raises(LandscapeInputError, match="does not match parameter shape"):
        loss_surface(model, images, labels, [[d.T if d.ndim == 2 else d for d in two[0]]], [0.0])
    with pytest.raises(LandscapeInputError, match="finite"):
        loss_surface(model, images, labels, two[:1], [0.0, float("nan")])
    with pytest.raises(LandscapeInputError, match=r"lie in \[0, 5\)"):
        loss_surface(model, images, labels + 5, two[:1], [0.0])
    with pytest.raises(LandscapeInputError, match="labels must be an integer"):
        loss_surface(model, images, labels.float(), two[:1], [0.0])
    with pytest.raises(LandscapeInputError, match="precision"):
        loss_surface(model, images, labels, two[:1], [0.0], settings=SurfaceSettings(precision="fp8"))
