"""Every stage places its model and data on the configured device before any computation.

Each stage runs with a stand-in device (``meta``: tensors without storage, so nothing runs and a
forgotten ``.to(device)`` leaves a tensor on the CPU) and its kernel replaced by a spy that checks,
at the kernel boundary, that parameters, buffers and inputs are all on it, then stops the stage.
"""

import pytest
import torch

import contrastlab.study.stages.finetune as finetune_stage
import contrastlab.study.stages.landscape as landscape_stage
import contrastlab.study.stages.pretrain as pretrain_stage
import contrastlab.study.stages.robustness as robustness_stage
import contrastlab.study.stages.sharpness as sharpness_stage
from contrastlab.study.inputs import pretrain_set
from contrastlab.train.pretrain import random_encoder
from helpers import micro_config, run_single_stage

STAND_IN = torch.device("meta")


class ReachedKernel(Exception):
    """The spy saw everything on the stand-in device."""


def assert_on_stand_in(what: str, tensors) -> None:
    for tensor in tensors:
        assert tensor.device == STAND_IN, f"{what} is on {tensor.device}, not on the stage's device"


def model_spy(kernel: str):
    def spy(model, *args, **kwargs):
        # hessian_sharpness takes (model, (images, labels), settings); the other kernels (model, images, labels, ...)
        images, labels = args[0] if isinstance(args[0], tuple) else args[:2]
        assert_on_stand_in(f"{kernel}: a parameter or buffer", [*model.parameters(), *model.buffers()])
        assert_on_stand_in(f"{kernel}: the images", [images])
        assert_on_stand_in(f"{kernel}: the labels", [labels])
        raise ReachedKernel(kernel)
    return spy


@pytest.fixture(scope="module")
def trained_files(tmp_path_factory):
    """An encoder and a probe trained on the CPU, the inputs of every analysis stage."""
    root = tmp_path_factory.mktemp("placement")
    config = micro_config()
    encoder = random_encoder(pretrain_set(config.data), root / "encoder.safetensors", seed=0, encoder="tiny_cnn", width=4)
    run_single_stage(config, "finetune", root / "probe", inputs={"encoder": encoder})
    return {"encoder": encoder, "probe": root / "probe" / "probe.safetensors"}


@pytest.mark.parametrize("kind, module, kernel", [
    ("landscape", landscape_stage, "loss_surface"),
    ("sharpness", sharpness_stage, "hessian_sharpness"),
    ("robustness", robustness_stage, "robust_accuracy"),
])
def test_analysis_stages_place_model_and_data_on_the_device(kind, module, kernel, trained_files, tmp_path, monkeypatch):
    monkeypatch.setattr(module, kernel, model_spy(kernel))
    with pytest.raises(ReachedKernel):
        run_single_stage(micro_config(), kind, tmp_path / kind, inputs=trained_files, device=STAND_IN)


def test_finetune_stage_places_the_encoder_on_the_device(trained_files, tmp_path, monkeypatch):
    def spy(self, encoder, *args, **kwargs):
        assert_on_stand_in("ProbeTrainer.run: an encoder parameter or buffer", [*encoder.parameters(), *encoder.buffers()])
        raise ReachedKernel("ProbeTrainer.run")

    monkeypatch.setattr(finetune_stage.ProbeTrainer, "run", spy)
    with pytest.raises(ReachedKernel):
        run_single_stage(micro_config(), "finetune", tmp_path / "probe", inputs={"encoder": trained_files["encoder"]}, device=STAND_IN)


def test_pretrain_stage_trains_on_the_device(tmp_path, monkeypatch):
    class Spy:
        def __init__(self, settings, model, device, precision):
            assert torch.device(device) == STAND_IN, f"Pretrainer got device {device}"
            assert precision == "fp32"
            raise ReachedKernel("Pretrainer")

    monkeypatch.setattr(pretrain_stage, "Pretrainer", Spy)
    with pytest.raises(ReachedKernel):
        run_single_stage(micro_config(), "pretrain", tmp_path / "pre", method="simclr", device=STAND_IN)
