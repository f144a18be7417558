"""Adversarial robustness: FGSM and ℓ∞ PGD, and accuracy/loss curves against ε.

The attacks work on any torch classifier that maps pixels in [0, 1] of shape (B, ...) to
logits (B, K); in this project normalization lives inside the models, so ε is a budget in
pixel units (ε = k/255 moves each pixel value by at most k grey levels).

- FGSM (Goodfellow et al. 2014): x̃ = clamp(x + ε·sign ∇ₓ CE(f(x), y), 0, 1).
- PGD (Madry et al. 2017): uniform random start in the ε-ball, then ``steps`` signed-gradient
  steps, each followed by the projection onto {‖x̃ − x‖∞ ≤ ε} ∩ [0, 1]. Both sets are boxes,
  so the projection is one coordinate-wise clamp to [max(x − ε, 0), min(x + ε, 1)].

``space="normalized"`` reproduces the original study's FGSM for comparison with its figure
only: ε is added to the *normalized* input x_n = (x − mean)/std and nothing is clamped. Since
x_n is an affine function of x with std > 0, sign ∇_{x_n} CE = sign ∇ₓ CE, and the attack is
x̃ = x + ε·std·sign ∇ₓ CE in pixels — an effective pixel budget of ε·std per channel
(≈ 0.25·ε with CIFAR's std), and x̃ may leave [0, 1].

Every attack runs the model in eval mode and restores each submodule's mode afterwards;
the input gradient comes from ``torch.autograd.grad``, so no parameter's ``.grad`` is touched;
the input tensors are never written to.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import eval_mode
from ..models.batchnorm import fold_batchnorm, folded_to_channels_last
from ..precision import autocast
from ..registry import lookup
from ..utils.progress import progress_bar
from .checks import AnalysisInputError, at_least_fp32, check_batch, check_label_range, check_positive_int, check_precision, model_device

log = logging.getLogger(__name__)

SPACES = ("pixel", "normalized")
# robust_accuracy attacks a BN-folded view of the model by default (see its docstring).
FOLD_BN_DEFAULT = True
# ... in channels_last: 1.3x less CPU time for the quick preset's three sweeps on a width-8 ResNet-18
# (one thread; FGSM, PGD-5 and FGSM in normalized space: 2.35 s -> 1.78 s), same curves up to float
# rounding. Measured on the CPU only; on a GPU it is the landscape's choice, not a measured one.
CHANNELS_LAST_DEFAULT = True


class AttackInputError(AnalysisInputError):
    """An ε, image batch, label vector or option that an attack cannot work with."""


class RobustnessCurve(NamedTuple):
    """Accuracy and mean cross-entropy under attack, one entry per ε (ε = 0: clean images)."""

    eps: np.ndarray  # (E,) float64, pixel units
    accuracy: np.ndarray  # (E,) float64 in [0, 1]
    loss: np.ndarray  # (E,) float64, mean CE over all samples


# --------------------------------------------------------------------------- checks


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise AttackInputError(f"eps must be a finite number >= 0, got {eps}")
    return eps


def _check_batch(images: torch.Tensor, labels: torch.Tensor) -> None:
    """Images: floating (B, ...) with values in [0, 1]; labels: integer (B,)."""
    check_batch(images, labels, pixels=True, error=AttackInputError)


def _check_label_range(labels: torch.Tensor, logits: torch.Tensor) -> None:
    check_label_range(labels, logits.shape[1], error=AttackInputError)


# --------------------------------------------------------------------------- pieces


def find_normalization(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The (mean, std) buffers of the first submodule (in ``model.modules()`` order) that has both.

    For ``classifier(encoder, head)`` of this project that is ``model[0].normalize``, whose
    buffers have shape (1, C, 1, 1).
    """
    for module in model.modules():
        mean, std = getattr(module, "mean", None), getattr(module, "std", None)
        if torch.is_tensor(mean) and torch.is_tensor(std):
            return mean, std
    raise AttackInputError("space='normalized' needs the input normalization: pass normalization=(mean, std) or use a model with a submodule holding 'mean' and 'std' buffers")


def _channel_tensor(values: torch.Tensor | Sequence[float], images: torch.Tensor) -> torch.Tensor:
    """Per-channel values as a tensor broadcastable against images (B, C, ...): (1, C, 1, ...)."""
    tensor = torch.as_tensor(values, dtype=images.dtype, device=images.device)
    if tensor.ndim == 1:
        tensor = tensor.view(1, -1, *([1] * (images.ndim - 2)))
    try:
        torch.broadcast_shapes(tensor.shape, images.shape)
    except RuntimeError:
        raise AttackInputError(f"normalization of shape {tuple(tensor.shape)} does not match images {tuple(images.shape)}") from None
    return tensor


def _unit_and_clamp(
    model: nn.Module,
    images: torch.Tensor,
    space: str,
    normalization: tuple[torch.Tensor | Sequence[float], torch.Tensor | Sequence[float]] | None,
) -> tuple[torch.Tensor | None, bool]:
    """The pixel size of one ε unit (None: 1, pixel space; std per channel in normalized space) and whether
    to clamp to [0, 1]. Checked here, once per attack or sweep: the std check reads a value back to the host."""
    if space == "pixel":
        return None, True
    if space != "normalized":
        raise AttackInputError(f"space must be one of {', '.join(SPACES)}, got '{space}'")
    _, std = normalization if normalization is not None else find_normalization(model)
    std = _channel_tensor(std, images)
    if not bool((std > 0).all()):
        raise AttackInputError("normalization std must be > 0")
    return std, False


@dataclass(frozen=True)
class Ball:
    """The set an attack stays in: {‖x̃ − x‖∞ ≤ ``budget``}, intersected with [0, 1] when ``clamp``.

    ``budget`` is ε in pixel space and ε·std (per channel) in normalized space.
    """

    eps: float
    budget: torch.Tensor | float
    clamp: bool

    @classmethod
    def of(cls, eps: float, unit: torch.Tensor | None, clamp: bool) -> Ball:
        return cls(eps, eps if unit is None else eps * unit, clamp)


def input_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """∇ₓ of the summed cross-entropy of ``model(images)``: (B, ...) -> (B, ...), images' dtype.

    The sum (not the mean) keeps each sample's gradient independent of the batch size in eval
    mode. ``torch.autograd.grad`` returns the gradient without accumulating into any ``.grad``.
    ``precision="bf16"`` runs the forward pass under bf16 autocast; the loss is taken in fp32.
    """
    return _input_gradient(model, images, labels, precision, check_labels=True)


def _input_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, precision: str, check_labels: bool = False) -> torch.Tensor:
    """:func:`input_gradient`, reading nothing back to the host unless ``check_labels`` (once per attack or sweep)."""
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        with autocast(precision, x.device):
            logits = model(x)
        if check_labels:
            _check_label_range(labels, logits)
        loss = F.cross_entropy(at_least_fp32(logits), labels, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, x)
    return gradient


def _on_model_device(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch where the model computes (its first parameter; the images' device for a model without any)."""
    device = model_device(model, default=images.device)
    return images.to(device), labels.to(device)


def _generator(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator seeded by an integer ``seed`` on ``device``; a generator or None passes through."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator(device=device).manual_seed(int(seed))


# --------------------------------------------------------------------------- attacks


def fgsm(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    space: str = "pixel",
    normalization: tuple[torch.Tensor | Sequence[float], torch.Tensor | Sequence[float]] | None = None,
    precision: str = "fp32",
    gradient: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fast gradient sign method: images (B, ...) in [0, 1], labels (B,) -> adversarial images (B, ...).

    Pixel space (default): clamp(x + ε·sign ∇ₓ CE, 0, 1), so ‖x̃ − x‖∞ ≤ ε and x̃ ∈ [0, 1].
    ``space="normalized"``: the original study's variant, x̃_n = x_n + ε·sign ∇_{x_n} CE with
    x_n = (x − mean)/std and no clamp, returned as pixels x̃ = x̃_n·std + mean — an effective
    pixel budget of ε·std (≈ 0.25·ε for CIFAR) that may leave [0, 1]. ``normalization=(mean,
    std)`` (per-channel sequences or tensors broadcastable to the images) overrides the
    buffers found by :func:`find_normalization`. The batch is moved to the model's device (its
    first parameter's), where the result is returned; ``precision`` "fp32" | "bf16" (autocast of
    the forward pass, see :func:`input_gradient`). ``gradient``: :func:`input_gradient` at these
    images, labels and precision (B, ...) if already at hand — it depends on neither ε nor the
    space, so a sweep over ε takes it once per batch.
    """
    eps = _check_eps(eps)
    _check_batch(images, labels)
    check_precision(precision, error=AttackInputError)
    images, labels = _on_model_device(model, images, labels)
    with eval_mode(model):
        ball = Ball.of(eps, *_unit_and_clamp(model, images, space, normalization))
        if eps == 0:
            return images.detach().clone()
        if gradient is None:
            gradient = input_gradient(model, images, labels, precision)
        elif gradient.shape != images.shape:
            raise AttackInputError(f"gradient of shape {tuple(gradient.shape)} does not match images {tuple(images.shape)}")
    return fgsm_step(images, gradient, ball)


def fgsm_step(images: torch.Tensor, gradient: torch.Tensor, ball: Ball) -> torch.Tensor:
    """x + budget·sign(gradient), clamped to [0, 1] when the ball says so: (B, ...) -> (B, ...), no read-back."""
    adversarial = images.detach() + ball.budget * gradient.sign()
    return adversarial.clamp(0, 1) if ball.clamp else adversarial


def pgd(  # 11 parameters: the attack's own options, each named at the call as the literature names them
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    seed: int | torch.Generator | None = None,
    *,
    space: str = "pixel",
    normalization: tuple[torch.Tensor | Sequence[float], torch.Tensor | Sequence[float]] | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """ℓ∞ projected gradient descent: images (B, ...) in [0, 1], labels (B,) -> adversarial images (B, ...).

    Start at x + u, u ~ Uniform[−ε, ε] per coordinate (``random_start``), projected; then
    ``steps`` times: x̃ ← Π(x̃ + α·sign ∇ₓ CE(f(x̃), y)), with Π the projection onto the ε-ball
    around x intersected with [0, 1] and α = ``step_size`` (default 2.5·ε/steps, so the
    iterates can cross the ball). ``seed``: an int seeds a fresh ``torch.Generator`` on the
    model's device; a generator is used as is; None draws from torch's global generator.
    ``space``/``normalization``/``precision`` and devices as in :func:`fgsm`: in normalized
    space ε and α are in normalized units (ε·std and α·std in pixels) and nothing is clamped.
    """
    eps = _check_eps(eps)
    _check_batch(images, labels)
    steps = check_positive_int(steps, "steps", error=AttackInputError)
    check_precision(precision, error=AttackInputError)
    images, labels = _on_model_device(model, images, labels)
    step_size = 2.5 * eps / steps if step_size is None else float(step_size)
    if not math.isfinite(step_size) or step_size < 0:
        raise AttackInputError(f"step_size must be a finite number >= 0, got {step_size}")
    with eval_mode(model):
        ball = Ball.of(eps, *_unit_and_clamp(model, images, space, normalization))
        if eps == 0:
            return images.detach().clone()
        plan = PGDPlan(steps, step_size, random_start, _generator(seed, images.device), precision)
        return pgd_steps(model, images, labels, ball, plan, check_labels=True)


@dataclass(frozen=True)
class PGDPlan:
    """PGD's steps: how many, of what size (in ε units: pixels, or normalized units), from a random start or
    not, the noise's generator (None: torch's global one) and the forward passes' precision."""

    steps: int
    step_size: float
    random_start: bool
    generator: torch.Generator | None
    precision: str


def pgd_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ball: Ball, plan: PGDPlan, check_labels: bool = False) -> torch.Tensor:
    """PGD on checked inputs (ε > 0, model in eval mode): images (B, ...) -> adversarial images (B, ...).

    No step reads anything back to the host (``check_labels`` checks the labels once, at the first step).
    """
    scale = ball.budget / ball.eps  # 1 in pixel space, std in normalized space
    origin = images.detach()
    lower, upper = origin - ball.budget, origin + ball.budget
    if ball.clamp:
        lower, upper = lower.clamp(min=0), upper.clamp(max=1)
    adversarial = origin.clone()
    if plan.random_start:
        noise = torch.rand(images.shape, generator=plan.generator, dtype=images.dtype, device=images.device)
        adversarial = torch.minimum(torch.maximum(origin + (2 * noise - 1) * ball.budget, lower), upper)
    for step in range(plan.steps):
        gradient = _input_gradient(model, adversarial, labels, plan.precision, check_labels=check_labels and step == 0)
        stepped = adversarial + plan.step_size * scale * gradient.sign()
        adversarial = torch.minimum(torch.maximum(stepped, lower), upper)
    return adversarial


ATTACKS: dict[str, Callable[..., torch.Tensor]] = {"fgsm": fgsm, "pgd": pgd}


# --------------------------------------------------------------------------- curves

# () -> the sweep's (images, labels) batches on the model's device, in order.
Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]
# (ε index, attacked batch, its labels), one per (ε, batch) of a sweep.
SweepInputs = Iterator[tuple[int, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Sweep:
    """What every (ε, batch) of a sweep shares: the attacked view of the model, its batches, the ε values,
    the ε unit and clamp of the attack's space, the forward passes' precision and the attack's own options."""

    model: nn.Module
    batches: Batches
    eps: np.ndarray
    unit: torch.Tensor | None
    clamp: bool
    precision: str
    options: dict[str, Any]

    def ball(self, eps: float) -> Ball:
        return Ball.of(float(eps), self.unit, self.clamp)


def _fgsm_inputs(sweep: Sweep, device: torch.device) -> SweepInputs:
    """FGSM's (ε, batch) inputs, batches outer: its gradient is taken at the clean images, so one
    gradient per batch serves every ε of the sweep (in normalized space too: the same sign, ε·std)."""
    if "seed" in sweep.options:
        raise AttackInputError("fgsm draws no random numbers: it takes no seed")
    if sweep.options:
        raise AttackInputError(f"fgsm takes no option {', '.join(sorted(sweep.options))}")
    for x, y in sweep.batches():
        gradient = None
        for i, eps in enumerate(sweep.eps):
            if eps > 0 and gradient is None:
                gradient = _input_gradient(sweep.model, x, y, sweep.precision)
            yield i, (fgsm_step(x, gradient, sweep.ball(eps)) if eps > 0 else x), y


def _pgd_inputs(sweep: Sweep, device: torch.device) -> SweepInputs:
    """PGD's (ε, batch) inputs, ε outer: an int ``seed`` is one fresh generator per ε that the batches
    share in order; a generator (or None: torch's global one) draws in this order."""
    options = dict(sweep.options)
    seed = options.pop("seed", None)
    steps = check_positive_int(options.pop("steps", 10), "steps", error=AttackInputError)
    step_size, random_start = options.pop("step_size", None), options.pop("random_start", True)
    if options:
        raise AttackInputError(f"pgd takes no option {', '.join(sorted(options))}")
    for i, eps in enumerate(sweep.eps):
        size = 2.5 * eps / steps if step_size is None else float(step_size)
        if not math.isfinite(size) or size < 0:
            raise AttackInputError(f"step_size must be a finite number >= 0, got {size}")
        generator = _generator(seed, device)
        for x, y in sweep.batches():
            if eps > 0:
                x = pgd_steps(sweep.model, x, y, sweep.ball(eps), PGDPlan(steps, size, random_start, generator, sweep.precision))
            yield i, x, y


# Each attack's sweep: its (ε, batch) inputs, attacked without a read-back to the host.
SWEEPS: dict[str, Callable[[Sweep, torch.device], SweepInputs]] = {"fgsm": _fgsm_inputs, "pgd": _pgd_inputs}


def _check_sweep(images: torch.Tensor, labels: torch.Tensor, eps_values, batch_size: int, precision: str) -> tuple[np.ndarray, int]:
    """The ε values as a float64 array (E,) and the batch size, after checking every input once."""
    eps_array = np.asarray(eps_values.detach().cpu() if torch.is_tensor(eps_values) else eps_values, dtype=np.float64).reshape(-1)
    if eps_array.size == 0:
        raise AttackInputError("eps_values must hold at least one ε")
    for eps in eps_array:
        _check_eps(eps)
    _check_batch(images, labels)
    batch_size = check_positive_int(batch_size, "batch_size", error=AttackInputError)
    check_precision(precision, error=AttackInputError)
    return eps_array, batch_size


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device, channels_last: bool) -> Batches:
    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, labels[start : start + batch_size].to(device)
    return batches


def _evaluate_sweep(sweep: Sweep, inputs: SweepInputs, n: int, device: torch.device, advance: Callable[..., None]) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and mean CE per ε (E,): sums accumulate on the device and are read back once, at the end."""
    total_loss = torch.zeros(len(sweep.eps), dtype=torch.float64, device=device)
    correct = torch.zeros(len(sweep.eps), dtype=torch.int64, device=device)
    labels_checked = False
    for i, x, y in inputs:
        with torch.no_grad(), autocast(sweep.precision, device):
            logits = sweep.model(x)
        if not labels_checked:  # once: the check reads the labels back to the host
            _check_label_range(y, logits)
            labels_checked = True
        total_loss[i] += F.cross_entropy(logits.double(), y, reduction="sum")
        correct[i] += (logits.argmax(1) == y).sum()
        advance(1)
    return correct.cpu().numpy() / n, total_loss.cpu().numpy() / n


def robust_accuracy(  # 9 with **attack_kwargs: the attack's options pass through by name, as to fgsm and pgd
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_values: Sequence[float] | np.ndarray | torch.Tensor,
    attack: str = "fgsm",
    batch_size: int = 256,
    *,
    precision: str = "fp32",
    progress: bool = False,
    **attack_kwargs: Any,
) -> RobustnessCurve:
    """Accuracy and mean CE of ``model`` under ``attack`` at every ε of ``eps_values`` (E,).

    ``images`` (N, ...) pixels in [0, 1] and ``labels`` (N,) are attacked in batches of
    ``batch_size``, moved to the model's device (its first parameter's); ε = 0 evaluates the
    clean images. ``attack`` is a name in :data:`SWEEPS`; ``attack_kwargs`` are ``space`` and
    ``normalization`` (as in :func:`fgsm`), PGD's ``steps``, ``step_size``, ``random_start``,
    ``seed``, and ``fold_bn``/``channels_last`` (below). An int ``seed`` becomes one generator
    per ε shared by all batches, so batches draw different noise and each ε's result does not
    depend on the other ε values in the sweep (it does depend on ``batch_size``). ``precision``
    "fp32" | "bf16": autocast of every forward pass; losses are accumulated in float64.
    ``fold_bn`` (default :data:`FOLD_BN_DEFAULT`): attack and evaluate a view of the model with
    every conv→BatchNorm pair folded into one convolution (the same function in eval mode, so the
    same input gradients up to float rounding). ``channels_last`` (default
    :data:`CHANNELS_LAST_DEFAULT`): the folded view's weights and 4-D batches in channels_last
    (rounding differs from NCHW, the math does not). Per batch and ε nothing is read back to the
    host: the sums are read once, at the end. The curve equals attacking each (ε, batch) of the
    same view and batches with :func:`fgsm` or :func:`pgd` bit for bit.
    """
    sweep_inputs = lookup(SWEEPS, attack, "attack")
    eps_array, batch_size = _check_sweep(images, labels, eps_values, batch_size, precision)
    device = model_device(model, default=images.device)
    fold_bn = attack_kwargs.pop("fold_bn", FOLD_BN_DEFAULT)
    channels_last = attack_kwargs.pop("channels_last", CHANNELS_LAST_DEFAULT)
    space, normalization = attack_kwargs.pop("space", "pixel"), attack_kwargs.pop("normalization", None)
    starts = range(0, images.shape[0], batch_size)
    with eval_mode(model), progress_bar(len(eps_array) * len(starts), f"{attack} sweep", progress) as advance:
        # The normalization's buffers are found before folding hides their owner.
        unit, clamp = _unit_and_clamp(model, images[:1].to(device), space, normalization)
        evaluated = fold_batchnorm(model)[0] if fold_bn else model
        if channels_last:
            folded_to_channels_last(evaluated)
        sweep = Sweep(evaluated, _batches(images, labels, batch_size, device, channels_last), eps_array, unit, clamp, precision,
                      attack_kwargs)
        accuracy, loss = _evaluate_sweep(sweep, sweep_inputs(sweep, device), images.shape[0], device, advance)
    for eps, acc, value in zip(eps_array, accuracy, loss):
        log.debug("%s eps=%.5f accuracy=%.4f loss=%.4f", attack, eps, acc, value)
    return RobustnessCurve(eps=eps_array, accuracy=accuracy, loss=loss)
