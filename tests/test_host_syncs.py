"""No host sync inside a hot loop, proved on the CPU.

:class:`~contrastlab.utils.host_sync.HostSyncCounter` counts the ops that make a CUDA host wait
(``.item()``, ``bool(tensor)``, ``nonzero``, boolean-mask indexing, ...). Each test runs a loop
with more and with fewer iterations (steps, grid points, products, attack steps) and asserts the
counts are equal: 0 syncs per iteration, whatever the setup and the final read-back cost. The
numbers themselves are checked bit for bit by the modules' own tests (test_landscape.py,
test_sharpness.py, test_attacks.py, test_finetune.py); nothing here changes them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import contrastlab.analysis.surface_eval as surface_eval
from contrastlab.analysis.attacks import pgd, robust_accuracy
from contrastlab.analysis.hessian import HessianOperator, HessianSettings
from contrastlab.analysis.directions import random_directions
from contrastlab.analysis.landscape import SurfaceSettings, loss_surface
from contrastlab.models import classifier, linear_classifier, tiny_cnn
from contrastlab.config import FinetuneConfig
from contrastlab.train.finetune import ProbeData, ProbeTrainer
from contrastlab.utils.host_sync import HostSyncCounter

pytestmark = pytest.mark.usefixtures("one_thread")

N_CLASSES = 3


def tiny_classifier(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    encoder = tiny_cnn(width=4)
    return classifier(encoder, linear_classifier(encoder.feature_dim, N_CLASSES))


def pixels(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=generator), torch.randint(0, N_CLASSES, (n,), generator=generator)


def syncs(run) -> HostSyncCounter:
    with HostSyncCounter() as counter:
        run()
    return counter


def test_the_counter_sees_the_syncs_it_is_meant_to_see():
    """The counter itself: .item(), bool() and boolean-mask indexing count; plain tensor ops do not."""
    x = torch.arange(6.0)

    def with_syncs():
        x.sum().item()
        bool((x > 2).any())
        x[x > 2].sum()

    assert syncs(with_syncs).total == 3
    assert syncs(lambda: (x * 2).softmax(0).argmax()).total == 0


@pytest.mark.parametrize("mode", ["linear", "full"])
def test_the_probe_training_step_reads_nothing_back(mode):
    """More steps per epoch (a smaller batch), the same syncs: the epoch's evaluation reads its metrics, no step does."""
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(32) % N_CLASSES
    torch.manual_seed(0)
    encoder = tiny_cnn(width=4)

    def train(batch_size: int, epochs: int = 1):
        data = ProbeData((images, labels), (images[:8], labels[:8]), images[:8], N_CLASSES)
        return lambda: ProbeTrainer(FinetuneConfig(epochs=epochs, batch_size=batch_size), mode=mode).run(encoder, data)

    one_step, four_steps = syncs(train(32)), syncs(train(8))
    assert four_steps.counts == one_step.counts, "a probe training step syncs with the host"
    per_epoch = syncs(train(8, epochs=2)).total - four_steps.total
    # The epoch's record: loss and accuracy of its three evaluations (train, val, analysis split), read per epoch.
    assert per_epoch <= 6


def test_a_landscape_row_reads_back_once_and_no_grid_point_syncs(monkeypatch):
    """More points per row, the same syncs; one read-back of each row's sums (2 rows here)."""
    model = tiny_classifier()
    images, labels = pixels(20)
    directions = random_directions(model, n=2, seed=0)
    reads = []
    original = surface_eval.read_back
    monkeypatch.setattr(surface_eval, "read_back", lambda sums, n: reads.append(len(sums)) or original(sums, n))
    settings = SurfaceSettings(batch_size=8, workers=1)

    def grid(columns: int):
        return lambda: loss_surface(model, images, labels, directions, np.linspace(-1, 1, columns), [-0.5, 0.5], settings)

    narrow = syncs(grid(2))
    assert reads == [2, 2]
    reads.clear()
    wide = syncs(grid(5))
    assert reads == [5, 5]  # one read-back per row, of the whole row
    assert wide.counts == narrow.counts, "a grid point syncs with the host"


@pytest.mark.parametrize("keep_graph", [True, False])
def test_a_hessian_vector_product_reads_nothing_back(keep_graph):
    """After the first product (which builds the kept graphs and checks the labels once), a product syncs 0 times."""
    model = tiny_classifier()
    images, labels = pixels(20)
    with HessianOperator(model, images, labels, HessianSettings(batch_size=8, keep_graph=keep_graph)) as hessian:
        raw, normalized = hessian.view("none"), hessian.filter_normalized()
        vector = torch.randn(raw.dim, generator=torch.Generator().manual_seed(0))
        raw.matvec(vector)
        assert syncs(lambda: raw.matvec(vector)).total == 0
        assert syncs(lambda: normalized.matvec(torch.ones(normalized.dim))).total == 0


def test_a_pgd_step_reads_nothing_back():
    """PGD with 4 steps syncs as often as with 1 (the label and pixel checks happen once per attack)."""
    model = tiny_classifier()
    images, labels = pixels(10)
    one, four = (syncs(lambda steps=steps: pgd(model, images, labels, 4 / 255, steps=steps, seed=0)) for steps in (1, 4))
    assert four.counts == one.counts, "a PGD step syncs with the host"


@pytest.mark.parametrize("attack, options", [("fgsm", {}), ("pgd", {"steps": 2, "seed": 0}), ("fgsm", {"space": "normalized"})])
def test_an_attack_sweep_reads_back_once_whatever_its_batches_and_eps(attack, options):
    """FGSM and PGD sweeps over 1 or 3 batches and 2 or 4 ε values sync equally often: the checks run once
    and the sums are read once, at the end — no (ε, batch) step syncs."""
    model = tiny_classifier()
    images, labels = pixels(12)
    model[0].register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))  # space="normalized" needs the input normalization
    model[0].register_buffer("std", torch.full((1, 3, 1, 1), 0.25))

    def sweep(batch_size: int, eps: list[float]):
        return lambda: robust_accuracy(model, images, labels, eps, attack=attack, batch_size=batch_size, **options)

    small = syncs(sweep(12, [0.0, 2 / 255]))
    large = syncs(sweep(4, [0.0, 1 / 255, 2 / 255, 8 / 255]))
    assert large.counts == small.counts, f"an {attack} step syncs with the host"
