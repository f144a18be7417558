"""Foreign encoders: solo-learn, lightly and torchvision checkpoints mapped onto contrastlab's
ResNet-18 give the features of the toolkits' own models (tests/toolkit_models.py, written from their
published layouts); mismatches and unusable files or functions are one-line errors; module:function."""

from __future__ import annotations

import argparse
import re

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from contrastlab.errors import CheckpointError
from contrastlab.models import build_encoder
from contrastlab.models.foreign import load_foreign_encoder
from toolkit_models import (LightlyResNet18, TorchvisionResNet18, lightly_backbone, lightly_checkpoint, max_relative_difference,
                            randomize, solo_learn_checkpoint)

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
WIDTH = 4


# ---------------------------------------------------------------- the key layouts, written out by hand


def torchvision_name(key: str) -> str:
    """torchvision's ResNet name of a contrastlab key (the reverse of what the loader does)."""
    key = re.sub(r"^stem\.0\.", "conv1.", key)
    key = re.sub(r"^stem\.1\.", "bn1.", key)
    key = re.sub(r"^stages\.(\d)\.(\d)\.shortcut\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.", key)
    return re.sub(r"^stages\.(\d)\.", lambda m: f"layer{int(m[1]) + 1}.", key)


LIGHTLY_CHILD = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


def lightly_name(key: str, children: dict[str, str] = LIGHTLY_CHILD) -> str:
    """The name in nn.Sequential(*list(resnet18.children())[:-1]): conv1 bn1 relu maxpool layer1..4 avgpool."""
    first, _, rest = torchvision_name(key).partition(".")
    return f"{children[first]}.{rest}"


@pytest.fixture(scope="module")
def source() -> nn.Module:
    """A width-4 contrastlab ResNet-18 with non-trivial BN statistics, in eval mode."""
    torch.manual_seed(0)
    model = build_encoder("resnet18", width=WIDTH, mean=MEAN, std=STD)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return model.eval()


def backbone_state(model: nn.Module, rename) -> dict[str, torch.Tensor]:
    return {rename(k): v.clone() for k, v in model.state_dict().items() if not k.startswith("normalize.")}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def same_features(encoder: nn.Module, source: nn.Module, images: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(images), source(images), rtol=0, atol=0)


def contrastlab_solo_checkpoint(source: nn.Module) -> dict:
    """contrastlab's padding-1 ResNet-18 in solo-learn's key layout (what the key tests need)."""
    state = {f"backbone.{k}": v for k, v in backbone_state(source, torchvision_name).items()}
    heads = {"projector.0.weight": torch.randn(8, 32), "momentum_backbone.conv1.weight": torch.randn(WIDTH, 3, 7, 7)}
    return {"state_dict": {**state, **heads}, "epoch": 3, "hyper_parameters": {"lr": 0.3, "name": "simclr"}}


# ---------------------------------------------------------------- the toolkits' own models: same features


IMAGES32 = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def assert_same_features(encoder: nn.Module, reference: torch.Tensor) -> None:
    """The issue's criterion: max abs difference <= 1e-5 of the largest feature."""
    with torch.no_grad():
        ours = encoder.eval()(IMAGES32)
    assert ours.shape == reference.shape
    assert max_relative_difference(ours, reference) <= 1e-5


def reference_features(model: nn.Module, mean=MEAN, std=STD) -> torch.Tensor:
    """The features a model computes on IMAGES32 normalized with (mean, std), as its toolkit feeds it."""
    x = (IMAGES32 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.eval()(x)


def test_solo_learn_cifar_checkpoint_gives_solo_learn_features(tmp_path):
    # solo-learn's CIFAR backbone: torchvision resnet18, conv1 = 3x3 stride 1 padding 2, maxpool and fc Identity
    backbone = randomize(TorchvisionResNet18(width=8, cifar_padding=2, num_classes=None), seed=1)
    path = tmp_path / "byol-cifar10.ckpt"
    torch.save(solo_learn_checkpoint(backbone), path)
    encoder, info = load_foreign_encoder(path, mean=MEAN, std=STD)
    assert_same_features(encoder, reference_features(backbone))
    assert info["source"] == "solo-learn" and info["format"] == "lightning" and info["mapped_keys"] == 120
    assert info["architecture"] == {"encoder": "resnet18", "width": 8, "in_channels": 3, "feature_dim": 64, "stem_padding": 2}
    # the padding is what made the difference: the same weights in a padding-1 stem compute other features
    padded_one, _ = load_foreign_encoder(path, mean=MEAN, std=STD, stem_padding=1)
    with torch.no_grad():
        assert max_relative_difference(padded_one(IMAGES32), reference_features(backbone)) > 1e-2


@pytest.mark.parametrize("container", ["torchvision", "lightly"])
def test_imagenet_stem_resnet18_gives_its_features(tmp_path, container):
    # a plain torchvision resnet18 state dict (fc included), and lightly's stock SimCLR example:
    # backbone = nn.Sequential(*list(torchvision resnet18.children())[:-1])
    model = randomize(TorchvisionResNet18(width=8), seed=2)
    model.fc = nn.Identity()
    path = tmp_path / "resnet18.pth"
    if container == "torchvision":
        torch.save({**model.state_dict(), "fc.weight": torch.randn(10, 64), "fc.bias": torch.zeros(10)}, path)
    else:
        backbone = nn.Sequential(*list(model.children())[:-1])
        torch.save(lightly_checkpoint(backbone, 64), path)
    encoder, info = load_foreign_encoder(path, mean=MEAN, std=STD)
    assert_same_features(encoder, reference_features(model))
    assert info["source"] == container and info["architecture"]["stem"] == "imagenet"
    assert [type(m).__name__ for m in encoder.stem] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]


def test_lightly_resnet_generator_backbone_gives_its_features(tmp_path):
    # lightly's CIFAR-10 benchmark: nn.Sequential(*list(ResNetGenerator("resnet-18").children())[:-1], AdaptiveAvgPool2d(1));
    # its children hold no ReLU after bn1 (ResNet.forward applies F.relu), so the backbone computes none
    resnet = randomize(LightlyResNet18(base=8), seed=3)
    backbone = lightly_backbone(resnet)
    path = tmp_path / "simclr-lightly.ckpt"
    torch.save(lightly_checkpoint(backbone, 64), path)
    encoder, info = load_foreign_encoder(path, mean=MEAN, std=STD)
    assert_same_features(encoder, reference_features(backbone).flatten(1))
    assert info["source"] == "lightly" and info["architecture"]["stem_relu"] is False and info["mapped_keys"] == 120


def test_lightly_resnet_generator_state_dict_gives_its_features(tmp_path):
    # the ResNetGenerator model itself (conv1 bn1 layerK.B.shortcut linear): its forward has the stem ReLU
    # and pools with F.avg_pool2d(out, 4), a global average on 32x32 inputs
    resnet = randomize(LightlyResNet18(base=8), seed=4)
    path = tmp_path / "resnet-generator.pth"
    torch.save(resnet.state_dict(), path)
    encoder, info = load_foreign_encoder(path, mean=MEAN, std=STD)
    with torch.no_grad():
        x = (IMAGES32 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        assert_same_features(encoder, resnet.features(x))
    assert info["source"] == "lightly" and "stem_relu" not in info["architecture"] and info["ignored_keys"] == 2


def test_stem_variants_survive_a_contrastlab_checkpoint(tmp_path):
    from contrastlab.checkpoint import encoder_from_checkpoint, save_checkpoint
    from contrastlab.models import architecture

    for options in ({"stem": "imagenet"}, {"stem_padding": 2}, {"stem_relu": False}):
        net = build_encoder("resnet18", width=4, mean=MEAN, std=STD, **options)
        arch = architecture("resnet18", 4, 3, net.feature_dim, net.stem_architecture)
        assert arch == {"encoder": "resnet18", "width": 4, "in_channels": 3, "feature_dim": 32, **options}
        save_checkpoint(tmp_path / "enc", {"encoder": net.state_dict()}, {"architecture": arch, "normalization": {"mean": MEAN, "std": STD}})
        loaded, _ = encoder_from_checkpoint(tmp_path / "enc.safetensors", arch)
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(IMAGES32), net.eval()(IMAGES32), rtol=0, atol=0)
    # a checkpoint of one stem is refused where another is expected, naming it
    imagenet = architecture("resnet18", 4, 3, 32, {"stem": "imagenet"})
    with pytest.raises(CheckpointError, match="imagenet stem"):
        encoder_from_checkpoint(tmp_path / "enc.safetensors", imagenet)


@pytest.mark.parametrize("lightning", [False, True])
def test_lightly_checkpoint_gives_the_source_features(tmp_path, source, images, lightning):
    state = {f"backbone.{k}": v for k, v in backbone_state(source, lightly_name).items()}
    state["projection_head.layers.0.weight"] = torch.randn(8, 32)
    path = tmp_path / "lightly.pth"
    torch.save({"state_dict": state} if lightning else state, path)
    encoder, info = load_foreign_encoder(path, mean=MEAN, std=STD)
    same_features(encoder, source, images)
    assert info["source"] == "lightly" and info["mapped_keys"] == 120
    assert info["format"] == ("lightning" if lightning else "state_dict")


def test_lightly_backbone_without_maxpool_child(tmp_path, source, images):
    # conv1 bn1 relu layer1..4: the layer children are numbered 3..6
    children = {"conv1": "0", "bn1": "1", "layer1": "3", "layer2": "4", "layer3": "5", "layer4": "6"}
    state = {f"backbone.{k}": v for k, v in backbone_state(source, lambda k: lightly_name(k, children)).items()}
    path = tmp_path / "lightly.pth"
    torch.save(state, path)
    encoder, _ = load_foreign_encoder(path, mean=MEAN, std=STD, format="lightly")
    same_features(encoder, source, images)


def test_plain_torchvision_state_dict_and_safetensors(tmp_path, source, images):
    state = backbone_state(source, torchvision_name)
    state.update({"fc.weight": torch.randn(10, 32), "fc.bias": torch.zeros(10)})
    for path in (tmp_path / "resnet18.pth", tmp_path / "resnet18.safetensors"):
        if path.suffix == ".pth":
            torch.save({f"module.{k}": v for k, v in state.items()}, path)  # DDP prefix too
        else:
            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        encoder, info = load_foreign_encoder(path, mean=MEAN, std=STD)
        same_features(encoder, source, images)
        assert info["source"] == "torchvision" and info["ignored_keys"] == 2


def test_missing_num_batches_tracked_is_accepted(tmp_path, source, images):
    state = {k: v for k, v in backbone_state(source, torchvision_name).items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "r.pth")
    encoder, _ = load_foreign_encoder(tmp_path / "r.pth", mean=MEAN, std=STD)
    same_features(encoder, source, images)


def one_line_error(path, match: str, **kwargs) -> str:
    with pytest.raises(CheckpointError, match=match) as caught:
        load_foreign_encoder(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_stem_is_a_one_line_error(tmp_path, source):
    ckpt = contrastlab_solo_checkpoint(source)
    ckpt["state_dict"]["backbone.conv1.weight"] = torch.randn(WIDTH, 3, 5, 5)
    torch.save(ckpt, tmp_path / "five.ckpt")
    message = one_line_error(tmp_path / "five.ckpt", "5x5 stem conv, neither the CIFAR")
    assert "'conv1.weight'" in message and "module:function" in message


def test_missing_unexpected_and_misshaped_keys_are_one_line_errors(tmp_path, source):
    ckpt = contrastlab_solo_checkpoint(source)
    del ckpt["state_dict"]["backbone.layer3.1.bn2.running_var"]
    torch.save(ckpt, tmp_path / "missing.ckpt")
    one_line_error(tmp_path / "missing.ckpt", r"lacks the backbone key .*stages\.2\.1\.bn2\.running_var")

    ckpt = contrastlab_solo_checkpoint(source)
    ckpt["state_dict"]["backbone.layer1.2.conv1.weight"] = torch.randn(WIDTH, WIDTH, 3, 3)  # a ResNet-34 block
    torch.save(ckpt, tmp_path / "r34.ckpt")
    one_line_error(tmp_path / "r34.ckpt", r"unexpected backbone key 'layer1\.2\.conv1\.weight'")

    ckpt = contrastlab_solo_checkpoint(source)
    ckpt["state_dict"]["backbone.layer1.0.conv3.weight"] = torch.randn(WIDTH, WIDTH, 1, 1)  # a bottleneck
    torch.save(ckpt, tmp_path / "r50.ckpt")
    one_line_error(tmp_path / "r50.ckpt", r"'layer1\.0\.conv3\.weight' has no counterpart")

    torch.save(contrastlab_solo_checkpoint(source), tmp_path / "rgb.ckpt")
    one_line_error(tmp_path / "rgb.ckpt", r"'conv1\.weight' has shape \(4, 3, 3, 3\), expected \(4, 1, 3, 3\)", in_channels=1)


def test_unreadable_and_unsafe_files_are_one_line_errors(tmp_path, source):
    ckpt = contrastlab_solo_checkpoint(source)
    ckpt["hyper_parameters"] = argparse.Namespace(lr=0.3)  # not loadable with weights_only
    torch.save(ckpt, tmp_path / "pickled.ckpt")
    message = one_line_error(tmp_path / "pickled.ckpt", "does not unpickle")
    assert "argparse.Namespace" in message and "state_dict" in message and "weights_only=False" in message

    (tmp_path / "junk.pth").write_bytes(b"\x80\x02not a checkpoint\x00")
    one_line_error(tmp_path / "junk.pth", "cannot read")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    one_line_error(tmp_path / "list.pth", "holds a list, not a state dict")
    torch.save({"model": {"conv1.weight": torch.zeros(2)}, "epoch": 3}, tmp_path / "nested.pth")
    one_line_error(tmp_path / "nested.pth", "its tensors are under 'model'")
    torch.save({"a.b": torch.zeros(2)}, tmp_path / "other.pth")
    one_line_error(tmp_path / "other.pth", "no ResNet backbone keys")
    one_line_error(tmp_path / "absent.ckpt", "not found")


def test_forced_format_must_match_the_keys(tmp_path, source):
    torch.save(contrastlab_solo_checkpoint(source), tmp_path / "solo.ckpt")
    one_line_error(tmp_path / "solo.ckpt", "forced to format 'lightly'", format="lightly")
    one_line_error(tmp_path / "solo.ckpt", "unknown encoder format", format="timm")
    torch.save(backbone_state(source, torchvision_name), tmp_path / "plain.pth")
    one_line_error(tmp_path / "plain.pth", "no 'backbone.' keys", format="solo-learn")


# ---------------------------------------------------------------- module:function


class _Flat(nn.Module):
    """Mean colour and a linear map of it: (B, 3, H, W) -> (B, 5)."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3, 5)

    def forward(self, x):
        return self.fc(self.bn(x.mean(dim=(2, 3))))


def tiny_encoder() -> nn.Module:
    return _Flat()


def tiny_encoder_with_dim() -> nn.Module:
    torch.manual_seed(0)
    model = _Flat()
    model.feature_dim = 5
    return model


def not_a_module():
    return lambda x: x


def image_map() -> nn.Module:
    return nn.Identity()


calls = {"count": 0}


def counted_encoder() -> nn.Module:
    calls["count"] += 1
    torch.manual_seed(3)  # the same weights on every call
    return _Flat()


def drawn_encoder() -> nn.Module:
    return _Flat()  # new random weights on every call (the global generator moves on)


def normalizing_encoder() -> nn.Module:
    from contrastlab.models import Normalize

    torch.manual_seed(0)
    model = _Flat()
    model.normalize = Normalize((0.1, 0.2, 0.3), (0.5, 0.5, 0.5), 3)
    return model


def linear_layer() -> nn.Module:
    return nn.Linear(3, 5)


def test_module_function_spec(images):
    encoder, info = load_foreign_encoder("test_foreign:counted_encoder", mean=MEAN, std=STD)
    assert encoder.feature_dim == 5 and not encoder.training and isinstance(encoder.net, _Flat)
    assert info == {"source": "module", "path": "test_foreign:counted_encoder", "format": "module", "mapped_keys": 0, "feature_dim": 5,
                    "architecture": None, "normalization": {"mean": pytest.approx(list(MEAN)), "std": pytest.approx(list(STD))}}
    # pixels reach the module normalized with mean/std (the stages give the data's when none are given)
    with torch.no_grad():
        normalized = (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        torch.testing.assert_close(encoder(images), encoder.net(normalized))
    # loaded once per process (two calls the first time, to check that they agree), then copies
    again, _ = load_foreign_encoder("test_foreign:counted_encoder")
    assert calls["count"] == 2 and again.net is not encoder.net
    torch.testing.assert_close(again.net.fc.weight, encoder.net.fc.weight, rtol=0, atol=0)
    encoder, _ = load_foreign_encoder("test_foreign:tiny_encoder_with_dim", format="module")
    assert encoder.feature_dim == 5


def test_module_with_its_own_normalization_keeps_it_unless_given(images):
    from contrastlab.models.normalization import input_normalization

    own, info = load_foreign_encoder("test_foreign:normalizing_encoder")
    assert isinstance(own, _Flat) and input_normalization(own)["mean"] == pytest.approx([0.1, 0.2, 0.3])
    given, _ = load_foreign_encoder("test_foreign:normalizing_encoder", mean=MEAN, std=STD)
    assert input_normalization(given)["std"] == pytest.approx(list(STD))


def test_module_function_errors():
    one_line_error("test_foreign:not_a_module", r"^test_foreign:not_a_module returned a function, not an nn.Module encoder")
    one_line_error("test_foreign:image_map", r"returned a Identity, not an encoder mapping \(B, C, H, W\) to \(B, D\)")
    one_line_error("test_foreign:linear_layer", r"^test_foreign:linear_layer returned a Linear, not an encoder mapping \(B, C, H, W\) to \(B, D\)")
    one_line_error("test_foreign:drawn_encoder", "returned different weights on two calls")
    one_line_error("os.path:join", r"^os.path:join needs arguments \(a\)")
    one_line_error("torch.nn:Linear", r"^torch.nn:Linear needs arguments \(in_features, out_features\)")
    one_line_error("test_foreign:absent", "has no 'absent'")
    one_line_error("no_such_module_here:build", "cannot import")
    one_line_error("just-a-name", "form 'package.module:function'", format="module")


def test_text_and_empty_files_are_named(tmp_path):
    (tmp_path / "notes.pt").write_text("epoch 10: loss 1.23\nthese are notes, não pesos\n")
    one_line_error(tmp_path / "notes.pt", r"notes.pt is a text file, not a checkpoint")
    (tmp_path / "config.safetensors").write_text("{}")
    one_line_error(tmp_path / "config.safetensors", "is a text file, not a checkpoint")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    one_line_error(tmp_path / "empty.ckpt", "is an empty file, not a checkpoint")
    one_line_error(tmp_path, "is a directory, not a checkpoint")


def test_suggested_export_command_works_on_a_pickled_whole_module(tmp_path):
    import shlex
    import subprocess
    import sys

    from contrastlab.models import BasicBlock

    # a whole backbone saved with torch.save(model): torchvision's children, contrastlab's blocks (importable classes)
    blocks = [nn.Sequential(BasicBlock(4 * 2 ** max(i - 1, 0) if i else 4, 4 * 2**i, 1 if i == 0 else 2), BasicBlock(4 * 2**i, 4 * 2**i, 1))
              for i in range(4)]
    model = randomize(nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Identity(), *blocks,
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten()), seed=6)
    path = tmp_path / "whole model.pt"
    torch.save(model, path)
    message = one_line_error(path, "does not unpickle")
    command = message.split("export its weights once (only for a file you trust): ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-c"]
    subprocess.run([sys.executable, "-c", argv[2]], check=True, cwd=tmp_path, timeout=120)
    encoder, info = load_foreign_encoder(tmp_path / "whole model.state_dict.pth", mean=MEAN, std=STD)
    assert info["source"] == "lightly"
    assert_same_features(encoder, reference_features(model))
    # the same command on a Lightning checkpoint with pickled hyper-parameters
    ckpt = contrastlab_solo_checkpoint(build_encoder("resnet18", width=WIDTH))
    ckpt["hyper_parameters"] = argparse.Namespace(lr=0.3)
    torch.save(ckpt, tmp_path / "solo.ckpt")
    argv = shlex.split(one_line_error(tmp_path / "solo.ckpt", "does not unpickle").split("trust): ", 1)[1])
    subprocess.run([sys.executable, "-c", argv[2]], check=True, cwd=tmp_path, timeout=120)
    assert load_foreign_encoder(tmp_path / "solo.state_dict.pth")[1]["source"] == "solo-learn"


# ---------------------------------------------------------------- the command line: one line naming the file or function


CLI_MICRO = ["model.encoder=tiny_cnn", "data.image_size=8", "data.downstream_train_per_class=8", "data.downstream_test_per_class=4",
             "finetune.epochs=1"]


def cli_sets(*extra: str) -> list[str]:
    return [a for s in (*CLI_MICRO, *extra) for a in ("--set", s)]


@pytest.mark.parametrize("encoder, pattern", [
    ("os.path:join", r"^error: os\.path:join needs arguments \(a\)"),
    ("torch.nn:Linear", r"^error: torch\.nn:Linear needs arguments \(in_features, out_features\)"),
    ("test_foreign:linear_layer", r"^error: test_foreign:linear_layer returned a Linear, not an encoder mapping \(B, C, H, W\) to \(B, D\)"),
    ("notes.txt", r"^error: \S*notes\.txt is a text file, not a checkpoint"),
])
def test_analyze_all_refusals_are_one_line(monkeypatch, capsys, tmp_path, encoder, pattern):
    from helpers import assert_one_line_error, run_cli

    (tmp_path / "notes.txt").write_text("this is not a checkpoint\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "analyze", "all", "--encoder", encoder, "--task", "0,1,2", "--out", tmp_path / "out",
                           "--no-progress", *cli_sets())
    assert_one_line_error(code, err, pattern)


def test_finetune_refusals_name_the_real_file(monkeypatch, capsys, tmp_path):
    from helpers import assert_one_line_error, run_cli

    monkeypatch.chdir(tmp_path)
    args = ["finetune", "--task", "0,1,2", "--out", tmp_path / "out", "--no-progress", *cli_sets()]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--checkpoint", "random.pt")
    assert_one_line_error(code, err, r"not found: random\.pt")
    assert "safetensors" not in err
    (tmp_path / "random.pt").write_text("a text file\n")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--checkpoint", "random.pt")
    assert_one_line_error(code, err, r"random\.pt is a text file, not a checkpoint")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--checkpoint", "os.path:join")
    assert_one_line_error(code, err, r"os\.path:join needs arguments")


def test_finetune_and_analyze_all_take_a_foreign_pt(monkeypatch, capsys, tmp_path, source):
    from helpers import run_cli

    # a torchvision-layout state dict saved as random.pt: probed as it is, and --mean/--std are what the probe records
    torch.save(backbone_state(source, torchvision_name), tmp_path / "random.pt")
    code, out, err = run_cli(monkeypatch, capsys, "finetune", "--checkpoint", tmp_path / "random.pt", "--task", "0,1,2", "--out",
                             tmp_path / "probe", "--no-progress", *cli_sets("model.encoder=resnet18", f"model.width={WIDTH}"))
    assert code == 0, err
    from contrastlab.utils.io import read_json

    assert read_json(tmp_path / "probe/result.json")["method"] == "torchvision"
    sets = cli_sets("analysis.landscape.enabled=false", "analysis.sharpness.enabled=false", "analysis.robustness.enabled=false")
    code, out, err = run_cli(monkeypatch, capsys, "analyze", "all", "--encoder", tmp_path / "random.pt", "--task", "0,1,2",
                             "--out", tmp_path / "all", "--mean", "0.4,0.5,0.6", "--std", "0.2,0.25,0.3", "--no-progress", *sets)
    assert code == 0, err
    probe = read_json(tmp_path / "all/finetune/torchvision/task-0-1-2/probe.json")
    assert probe["normalization"]["mean"] == pytest.approx(list(MEAN)) and probe["normalization"]["std"] == pytest.approx(list(STD))
    code, _, err = run_cli(monkeypatch, capsys, "analyze", "all", "--encoder", tmp_path / "random.pt", "--task", "0,1,2",
                           "--out", tmp_path / "all", "--mean", "0.4,0.5", "--no-progress", *sets)
    assert code != 0 and "--mean and --std together" in err
