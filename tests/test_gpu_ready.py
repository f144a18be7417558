"""What a GPU run needs, proved without a GPU: device-sized defaults, cuDNN autotuning, the Hessian's
graph budget from free memory, each DDP rank's device, and TensorBoard on rank 0 only.

CUDA is faked where needed: ``torch.cuda`` functions are monkeypatched and environment
variables set as torchrun or Slurm would; nothing here touches a real device.
"""

from __future__ import annotations

import pytest
import torch

import contrastlab.analysis.hessian as hessian_module
import contrastlab.distributed as distributed
from contrastlab.analysis.hessian import CPU_GRAPH_BUDGET_BYTES, HessianOperator, HessianSettings, graph_budget_bytes
from contrastlab.config import LandscapeConfig, RobustnessConfig, SharpnessConfig
from contrastlab.config_checks import load_config
from contrastlab.errors import ConfigError
from contrastlab.models import classifier, linear_classifier, tiny_cnn
from contrastlab.study.context import AUTO_BATCH_SIZES, enable_cudnn_benchmark, unit_context
from contrastlab.study.plan import plan_units
from contrastlab.utils.tensorboard import NullWriter, scalar_writer
from helpers import micro_config

CUDA = torch.device("cuda", 0)
GiB = 1 << 30


@pytest.fixture
def cuda_flags():
    """The process-wide flags a CUDA unit context sets (cuDNN autotuning, TF32), restored after the test."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# --------------------------------------------------------------------------- batch sizes


def analysis_unit(config, kind: str):
    return next(u for u in plan_units(config) if u.kind == kind)


@pytest.mark.parametrize("kind", ["landscape", "sharpness", "robustness"])
def test_stage_batch_sizes_are_auto_unless_set_and_a_set_value_wins(kind, tmp_path, cuda_flags):
    config = micro_config(f"analysis.{kind}.batch_size=null")
    unit = analysis_unit(config, kind)
    cpu, gpu = AUTO_BATCH_SIZES[kind]
    for device, expected in ((torch.device("cpu"), cpu), (CUDA, gpu)):
        ctx = unit_context(unit, config, tmp_path, tmp_path, device=device)
        assert ctx.settings.batch_size is None and ctx.batch_size(ctx.settings.batch_size) == expected
    config = micro_config(f"analysis.{kind}.batch_size=96")
    for device in (torch.device("cpu"), CUDA):
        ctx = unit_context(analysis_unit(config, kind), config, tmp_path, tmp_path, device=device)
        assert ctx.batch_size(ctx.settings.batch_size) == 96


def test_the_gpu_batches_apply_by_default():
    """The robustness stage's GPU batch used to lose to a config default of 256; every section is auto now."""
    assert RobustnessConfig().batch_size is None and SharpnessConfig().batch_size is None and LandscapeConfig().batch_size is None
    assert load_config("paper").analysis.robustness.batch_size is None
    assert AUTO_BATCH_SIZES["robustness"] == (256, 1024) and AUTO_BATCH_SIZES["sharpness"] == (256, 512)
    # The CPU presets set the CPU's value, which keeps their unit keys as before the auto default.
    assert load_config("quick").analysis.robustness.batch_size == 256


# --------------------------------------------------------------------------- cuDNN


def test_cudnn_benchmark_is_on_for_cuda_units_only(tmp_path, cuda_flags):
    torch.backends.cudnn.benchmark = False
    assert not enable_cudnn_benchmark(torch.device("cpu")) and torch.backends.cudnn.benchmark is False
    config = micro_config()
    unit = analysis_unit(config, "landscape")
    ctx = unit_context(unit, config, tmp_path, tmp_path, device=torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False and ctx.execution()["cudnn_benchmark"] is False
    ctx = unit_context(unit, config, tmp_path, tmp_path, device=CUDA)  # where every stage resolves its device
    assert torch.backends.cudnn.benchmark is True and ctx.execution()["cudnn_benchmark"] is True


# --------------------------------------------------------------------------- the Hessian's graph budget


def test_the_graph_budget_is_the_free_cuda_memory_less_a_margin(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * GiB, 141 * GiB))
    assert graph_budget_bytes(CUDA) == int(100 * GiB - 0.10 * 141 * GiB)  # 10% of the card > 4 GiB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GiB, 24 * GiB))
    assert graph_budget_bytes(CUDA) == 6 * GiB  # 4 GiB > 10% of the card
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (GiB, 24 * GiB))
    assert graph_budget_bytes(CUDA) == 0  # a full card keeps no graph
    assert graph_budget_bytes("cpu") == CPU_GRAPH_BUDGET_BYTES == 2 * GiB


def test_the_operator_takes_its_budget_from_its_device(monkeypatch):
    """settings.graph_budget_bytes=None asks graph_budget_bytes(device): a 0 budget recomputes the graphs per product."""
    torch.manual_seed(0)
    encoder = tiny_cnn(width=2)
    model = classifier(encoder, linear_classifier(encoder.feature_dim, 3))
    images, labels = torch.rand(12, 3, 6, 6), torch.arange(12) % 3
    asked = []
    for budget, forwards in ((0, 1 + 2 * 2), (CPU_GRAPH_BUDGET_BYTES, 2)):
        monkeypatch.setattr(hessian_module, "graph_budget_bytes", lambda device, budget=budget: asked.append(device) or budget)
        calls = [0]
        handle = model[1].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        with HessianOperator(model, images, labels, HessianSettings(batch_size=6)) as hessian:
            for _ in range(2):
                hessian.matvec(torch.ones(hessian.dim))
        handle.remove()
        assert calls[0] == forwards  # budget 0: the first batch's measured graph, then 2 batches per product
    assert asked == [torch.device("cpu")] * 2


# --------------------------------------------------------------------------- DDP and Slurm


def fake_cuda(monkeypatch, visible: int) -> list[int]:
    """CUDA with ``visible`` devices; returns the list torch.cuda.set_device calls go to."""
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


@pytest.mark.parametrize("visible, local_rank, expected", [(4, 3, 3), (4, 0, 0), (1, 3, 0), (1, 0, 0)])
def test_each_rank_gets_its_gpu_whether_it_sees_all_or_one(visible, local_rank, expected, monkeypatch):
    """All of a node's GPUs visible to every task: GPU LOCAL_RANK; one GPU per task (Slurm's binding,
    CUDA_VISIBLE_DEVICES with one entry): cuda:0 whatever the local rank."""
    chosen = fake_cuda(monkeypatch, visible)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed.local_device("auto") == torch.device("cuda", expected)
    groups = []
    monkeypatch.setattr(distributed.torch_dist, "init_process_group", lambda backend: groups.append(backend))
    distributed.init_from_env("auto")
    assert chosen == [expected] and groups == ["nccl"]


def test_a_local_rank_beyond_the_visible_gpus_is_a_one_line_error(monkeypatch):
    fake_cuda(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(ConfigError, match="LOCAL_RANK=3 but this process sees 2 GPUs"):
        distributed.local_device("auto")


def test_only_rank_0_opens_tensorboard_writers(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    writer = scalar_writer(tmp_path / "rank1")
    assert isinstance(writer, NullWriter) and not (tmp_path / "rank1").exists()
    monkeypatch.setenv("RANK", "0")
    with scalar_writer(tmp_path / "rank0") as writer:
        writer.add_scalar("loss", 1.0, 0)
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert isinstance(writer, NullWriter)  # the optional extra is missing: no writer on any rank
    else:
        assert (tmp_path / "rank0").is_dir() and any((tmp_path / "rank0").iterdir())
