"""Pretraining methods: what each one adds to the one training loop of :mod:`.pretrain`.

A method is an entry of :data:`METHODS`, an object with one small interface:

- :meth:`Method.n_views` and ``augmentation``: how many views per image, and which recipe of
  :func:`contrastlab.augment.make_views` draws them;
- :meth:`Method.build_head`: the head after the encoder (projector, predictor, classifier); the
  online network is ``nn.Sequential(encoder, head)``;
- :meth:`Method.build_state`: what it keeps beside the online network (an EMA target network,
  a queue of keys), as a :class:`MethodState` the loop checkpoints and resumes;
- :meth:`Method.loss`: the scalar loss of one step from the online network's outputs, plus the
  projections whose spread measures collapse;
- :meth:`Method.after_step`: what follows the optimizer step (EMA update, enqueueing keys);
- :meth:`Method.optimizer`: the optimizer of its recipe.

The loop never branches on a method's name. Under DDP each method computes the loss of the
global batch (``distributed.gather_with_grad``), so the loop backpropagates ``world · loss``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed as dist
from ..config import PretrainConfig
from ..families import family_of
from ..models import linear_classifier, projection_head
from ..objectives import contrastive_loss, supervised_cross_entropy
from ..registry import lookup


@dataclass
class HeadSpec:
    """What a head is built from: the encoder's feature size, the classes, and the settings."""

    feature_dim: int
    num_classes: int
    projection_dim: int  # model.projection_dim (the SimCLR / SupCon head)
    settings: PretrainConfig
    method: str
    seed: int = 0  # seeds what a method draws at set-up beside the weights (MoCo's initial queue)

    @property
    def own(self) -> Any:
        """The method's own settings section (pretrain.<method>), or None."""
        return getattr(self.settings, self.method, None)


@dataclass
class StepBatch:
    """One step's data on this rank: ``views`` (n·V, C, H, W), ``labels`` (n,)."""

    views: Tensor
    labels: Tensor
    n_views: int


@dataclass
class MethodState:
    """What a method keeps beside the online network: ``target`` (an EMA copy of part of it,
    never trained by gradients), ``queue`` (keys of earlier batches) and the keys of the step
    waiting to be enqueued. ``online_part`` is the part of the online network ``target`` copies."""

    target: nn.Module | None = None
    online_part: nn.Module | None = None
    queue: Any = None  # momentum.KeyQueue
    pending: Tensor | None = None

    def tensors(self) -> dict[str, dict[str, Tensor]]:
        """The checkpoint parts of this state ({} for a method without any)."""
        parts: dict[str, dict[str, Tensor]] = {}
        if self.target is not None:
            parts["target"] = self.target.state_dict()
        if self.queue is not None:
            parts["queue"] = self.queue.state_dict()
        return parts

    def load(self, parts: dict[str, dict[str, Tensor]]) -> None:
        """Restore what :meth:`tensors` saved (in place, keeping devices and memory formats)."""
        if self.target is not None:
            self.target.load_state_dict(parts["target"])
        if self.queue is not None:
            self.queue.load_state_dict(parts["queue"])


def per_sample(outputs: Tensor, n_views: int) -> Tensor:
    """(n·V, D) network outputs -> float (n, V, D), sample-major as make_views lays them out."""
    return outputs.float().view(-1, n_views, outputs.shape[-1])


def projection_std(projections: Tensor) -> Tensor:
    """Collapse measure of projections (M, D): the std over samples of the L2-normalized rows, mean
    over dimensions, times sqrt(D). About 1 for projections spread over the sphere, 0 when every
    row is the same. A 0-d tensor on the projections' device (no host sync)."""
    z = F.normalize(projections.detach().float().flatten(0, -2), dim=-1)
    return z.std(dim=0).mean() * math.sqrt(z.shape[-1])


def sgd(model: nn.Module, lr: float, settings: PretrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum over every parameter, with pretrain.momentum / weight_decay."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


class Method:
    """The interface every pretraining method implements (see the module docstring)."""

    name: str = ""
    augmentation: str = "contrastive"
    uses_temperature: bool = False  # reads pretrain.temperature.<name>

    def n_views(self, settings: PretrainConfig) -> int:
        """Views per image: two for the two-view methods."""
        return 2

    @property
    def family(self) -> str:
        return family_of(self.name)

    def build_head(self, spec: HeadSpec) -> nn.Module:
        raise NotImplementedError

    def build_state(self, model: nn.Sequential, spec: HeadSpec) -> MethodState:
        """State beside the online network ``model`` (already on its device): none by default."""
        return MethodState()

    def loss(self, outputs: Any, batch: StepBatch, state: MethodState, settings: PretrainConfig) -> tuple[Tensor, Tensor]:
        """(scalar loss of the global batch, this rank's projections (M, D) for :func:`projection_std`)."""
        raise NotImplementedError

    def after_step(self, state: MethodState, step: int, total_steps: int, settings: PretrainConfig) -> None:
        """After the optimizer step ``step`` (1-based) of ``total_steps``: EMA updates, enqueueing keys."""

    def optimizer(self, model: nn.Module, lr: float, settings: PretrainConfig) -> torch.optim.Optimizer:
        return sgd(model, lr, settings)

    def warmup_epochs(self, settings: PretrainConfig) -> int:
        return settings.warmup_epochs


class Contrastive(Method):
    """SimCLR (positives: the other views of the sample) and SupCon (every row of the same label)."""

    uses_temperature = True

    def n_views(self, settings: PretrainConfig) -> int:
        return settings.views  # any V >= 2

    def __init__(self, name: str, supervised: bool):
        self.name, self.supervised = name, supervised

    def build_head(self, spec: HeadSpec) -> nn.Module:
        return projection_head(spec.feature_dim, out_dim=spec.projection_dim)

    def loss(self, outputs: Tensor, batch: StepBatch, state: MethodState, settings: PretrainConfig) -> tuple[Tensor, Tensor]:
        z = per_sample(outputs, batch.n_views)
        gathered, labels = dist.gather_with_grad(z), dist.gather(batch.labels)
        loss = contrastive_loss(gathered, labels if self.supervised else None, settings.temperature[self.name],
                                settings.base_temperature, settings.loss_form)
        return loss, z


class SupervisedCE(Method):
    """SupCE: a linear classifier on the encoder, cross-entropy on one view per image."""

    name, augmentation = "supce", "supervised"

    def n_views(self, settings: PretrainConfig) -> int:
        return 1

    def build_head(self, spec: HeadSpec) -> nn.Module:
        return linear_classifier(spec.feature_dim, spec.num_classes)

    def loss(self, outputs: Tensor, batch: StepBatch, state: MethodState, settings: PretrainConfig) -> tuple[Tensor, Tensor]:
        logits = per_sample(outputs, batch.n_views)
        loss = supervised_cross_entropy(dist.gather_with_grad(logits), dist.gather(batch.labels))
        return loss, logits  # SupCE has no projector: the spread of its logits


def bn_mlp(dims: list[int], bias: bool = True) -> nn.Sequential:
    """Linear layers through ``dims``, each hidden one followed by BatchNorm and ReLU (e.g. [512, 4096, 256])."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=bias or last))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class PredictorHead(nn.Module):
    """A projector followed by a predictor: features (B, F) -> {"projection": (B, D), "prediction": (B, D)}."""

    def __init__(self, projector: nn.Module, predictor: nn.Module):
        super().__init__()
        self.projector, self.predictor = projector, predictor

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        z = self.projector(features)
        return {"projection": z, "prediction": self.predictor(z)}


def lars(model: nn.Module, lr: float, settings: PretrainConfig, own: Any) -> torch.optim.Optimizer:
    """LARS as solo-learn's CIFAR recipes use it: clipped trust ratio, biases and norms excluded."""
    from .lars import LARS

    return LARS(model.parameters(), lr=lr, momentum=settings.momentum, weight_decay=own.weight_decay, eta=own.lars_eta,
                clip_lr=True, exclude_bias_and_norm=True)


def own_sgd(model: nn.Module, lr: float, settings: PretrainConfig, own: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=settings.momentum, weight_decay=own.weight_decay)


OPTIMIZERS = {"sgd": own_sgd, "lars": lars}


class OwnRecipe(Method):
    """A method with a settings section of its own (pretrain.<name>): its optimizer, weight decay and warm-up."""

    def own(self, settings: PretrainConfig) -> Any:
        return getattr(settings, self.name)

    def optimizer(self, model: nn.Module, lr: float, settings: PretrainConfig) -> torch.optim.Optimizer:
        own = self.own(settings)
        return lookup(OPTIMIZERS, own.optimizer, f"pretrain.{self.name}.optimizer")(model, lr, settings, own)

    def warmup_epochs(self, settings: PretrainConfig) -> int:
        return self.own(settings).warmup_epochs


def momentum_copy(online_part: nn.Module) -> MethodState:
    """A target network: a copy of ``online_part`` that no gradient reaches, updated by EMA only."""
    target = copy.deepcopy(online_part)
    target.requires_grad_(False)
    return MethodState(target=target, online_part=online_part)


def target_outputs(state: MethodState, batch: StepBatch) -> Tensor:
    """The target network's outputs on the step's views, float (n, V, D), without a graph."""
    with torch.no_grad():
        return per_sample(state.target(batch.views.flatten(0, 1)), batch.n_views)


def ema_after_step(state: MethodState, step: int, total_steps: int, own: Any) -> None:
    """target ← τ·target + (1 − τ)·online, τ on the cosine schedule from own.tau_base to own.tau_final."""
    from .momentum import ema_update_, momentum_tau

    ema_update_(state.target, state.online_part, momentum_tau(step, total_steps, own.tau_base, own.tau_final))


class Byol(OwnRecipe):
    """BYOL: predict an EMA target network's projection of the other view; 2 − 2·cos, summed over both directions."""

    name = "byol"

    def build_head(self, spec: HeadSpec) -> nn.Module:
        own = spec.own
        return PredictorHead(bn_mlp([spec.feature_dim, own.projector_hidden, own.projector_out]),
                             bn_mlp([own.projector_out, own.predictor_hidden, own.projector_out]))

    def build_state(self, model: nn.Sequential, spec: HeadSpec) -> MethodState:
        return momentum_copy(nn.Sequential(model[0], model[1].projector))  # encoder + projector

    def loss(self, outputs: dict[str, Tensor], batch: StepBatch, state: MethodState, settings: PretrainConfig) -> tuple[Tensor, Tensor]:
        from ..objectives import byol_loss

        p = dist.gather_with_grad(per_sample(outputs["prediction"], batch.n_views))
        z = dist.gather(target_outputs(state, batch))
        return byol_loss(p[:, 0], z[:, 1]) + byol_loss(p[:, 1], z[:, 0]), per_sample(outputs["projection"], batch.n_views)

    def after_step(self, state: MethodState, step: int, total_steps: int, settings: PretrainConfig) -> None:
        ema_after_step(state, step, total_steps, self.own(settings))


class SimSiam(OwnRecipe):
    """SimSiam: predict the stop-gradient projection of the other view; −cos, averaged over both directions."""

    name = "simsiam"

    def build_head(self, spec: HeadSpec) -> nn.Module:
        own = spec.own
        hidden, out = own.projector_hidden, own.projector_out
        # Three layers, BatchNorm after each (the last one without affine), biases only where no BN follows.
        projector = bn_mlp([spec.feature_dim, hidden, hidden, out], bias=False)
        projector[-1] = nn.Linear(hidden, out, bias=False)
        projector.append(nn.BatchNorm1d(out, affine=False))
        return PredictorHead(projector, bn_mlp([out, own.predictor_hidden, out], bias=False))

    def loss(self, outputs: dict[str, Tensor], batch: StepBatch, state: MethodState, settings: PretrainConfig) -> tuple[Tensor, Tensor]:
        from ..objectives import simsiam_loss

        z_local = per_sample(outputs["projection"], batch.n_views)
        p = dist.gather_with_grad(per_sample(outputs["prediction"], batch.n_views))
        z = dist.gather_with_grad(z_local)  # detached inside the loss (the stop-gradient)
        return (simsiam_loss(p[:, 0], z[:, 1]) + simsiam_loss(p[:, 1], z[:, 0])) / 2, z_local


class TwoViewRegularized(OwnRecipe):
    """A method whose head is a three-layer BatchNorm MLP projector and whose loss compares the
    two views' projections over the global batch (its batch statistics need every rank's samples)."""

    def build_head(self, spec: HeadSpec) -> nn.Module:
        own = spec.own
        return bn_mlp([spec.feature_dim, own.projector_hidden, own.projector_hidden, own.projector_out])

    def loss(self, outputs: Tensor, batch: StepBatch, state: MethodState, settings: PretrainConfig) -> tuple[Tensor, Tensor]:
        own, z_local = self.own(settings), per_sample(outputs, batch.n_views)
        z = dist.gather_with_grad(z_local)
        return self.view_loss(z[:, 0], z[:, 1], own), z_local

    def view_loss(self, z_a: Tensor, z_b: Tensor, own: Any) -> Tensor:
        """The scalar loss of the two views' global projections (N, D) each, with the method's settings ``own``."""
        raise NotImplementedError


class BarlowTwins(TwoViewRegularized):
    """Barlow Twins: the cross-correlation of the two views' standardized projections (global batch) towards I."""

    name = "barlow_twins"

    def view_loss(self, z_a: Tensor, z_b: Tensor, own: Any) -> Tensor:
        from ..objectives import barlow_twins_loss

        return barlow_twins_loss(z_a, z_b, own.lambd, own.scale)


class Vicreg(TwoViewRegularized):
    """VICReg: invariance (MSE), variance and covariance terms, the latter two over the global batch."""

    name = "vicreg"

    def view_loss(self, z_a: Tensor, z_b: Tensor, own: Any) -> Tensor:
        from ..objectives import vicreg_loss

        return vicreg_loss(z_a, z_b, own.sim_weight, own.var_weight, own.cov_weight)


class MocoV2(OwnRecipe):
    """MoCo v2: InfoNCE of queries against an EMA key encoder's keys and a queue of earlier keys,
    symmetrized over the two views; both views' keys (global batch) are enqueued after the step."""

    name, uses_temperature = "mocov2", True

    def build_head(self, spec: HeadSpec) -> nn.Module:
        own = spec.own
        if own.projector_bn:
            return bn_mlp([spec.feature_dim, own.projector_hidden, own.projector_out])
        return nn.Sequential(nn.Linear(spec.feature_dim, own.projector_hidden), nn.ReLU(inplace=True),
                             nn.Linear(own.projector_hidden, own.projector_out))

    def build_state(self, model: nn.Sequential, spec: HeadSpec) -> MethodState:
        from .momentum import KeyQueue

        state = momentum_copy(model)  # the key encoder: encoder + projector
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(spec.seed)
        state.queue = KeyQueue.random(spec.own.queue_size, spec.own.projector_out, generator, device)
        return state

    def loss(self, outputs: Tensor, batch: StepBatch, state: MethodState, settings: PretrainConfig) -> tuple[Tensor, Tensor]:
        from ..objectives import moco_loss

        q_local, temperature = per_sample(outputs, batch.n_views), settings.temperature[self.name]
        q, k = dist.gather_with_grad(q_local), dist.gather(target_outputs(state, batch))
        queue = state.queue.keys
        loss = (moco_loss(q[:, 0], k[:, 1], queue, temperature) + moco_loss(q[:, 1], k[:, 0], queue, temperature)) / 2
        state.pending = F.normalize(k.transpose(0, 1).flatten(0, 1), dim=1)  # enqueued after backward (the loss reads the queue)
        return loss, q_local

    def after_step(self, state: MethodState, step: int, total_steps: int, settings: PretrainConfig) -> None:
        ema_after_step(state, step, total_steps, self.own(settings))
        state.queue.enqueue(state.pending)
        state.pending = None


METHODS: dict[str, Method] = {
    "simclr": Contrastive("simclr", supervised=False),
    "supcon": Contrastive("supcon", supervised=True),
    "supce": SupervisedCE(),
    "mocov2": MocoV2(),
    "byol": Byol(),
    "simsiam": SimSiam(),
    "barlow_twins": BarlowTwins(),
    "vicreg": Vicreg(),
}


def get_method(name: str) -> Method:
    """The registered method ``name``; the error lists the valid names."""
    return lookup(METHODS, name, "pretraining method")
