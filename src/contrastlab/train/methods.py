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
            parts["queue"] = {"keys": self.queue.keys, "pointer": self.queue.pointer}
        return parts

    def load(self, parts: dict[str, dict[str, Tensor]]) -> None:
        """Restore what :meth:`tensors` saved (in place, keeping devices and memory formats)."""
        if self.target is not None:
            self.target.load_state_dict(parts["target"])
        if self.queue is not None:
            self.queue.keys.copy_(parts["queue"]["keys"])
            self.queue.pointer.copy_(parts["queue"]["pointer"])


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

    def after_step(self, state: MethodState, progress: float) -> None:
        """After the optimizer step; ``progress`` = steps done / all steps of the run."""

    def optimizer(self, model: nn.Module, lr: float, settings: PretrainConfig) -> torch.optim.Optimizer:
        return sgd(model, lr, settings)

    def warmup_epochs(self, settings: PretrainConfig) -> int:
        return settings.warmup_epochs

    def weight_decay(self, settings: PretrainConfig) -> float:
        return settings.weight_decay


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


METHODS: dict[str, Method] = {
    "simclr": Contrastive("simclr", supervised=False),
    "supcon": Contrastive("supcon", supervised=True),
    "supce": SupervisedCE(),
}


def get_method(name: str) -> Method:
    """The registered method ``name``; the error lists the valid names."""
    return lookup(METHODS, name, "pretraining method")
