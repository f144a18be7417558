"""Foreign encoders: solo-learn, lightly and torchvision key layouts mapped onto contrastlab's
CIFAR ResNet-18 give the source model's features; mismatches are one-line errors; module:function."""

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


def solo_learn_checkpoint(source: nn.Module) -> dict:
    state = {f"backbone.{k}": v for k, v in backbone_state(source, torchvision_name).items()}
    heads = {
        "projector.0.weight": torch.randn(8, 32), "projector.0.bias": torch.zeros(8),
        "classifier.weight": torch.randn(10, 32), "classifier.bias": torch.zeros(10),
        "momentum_backbone.conv1.weight": torch.randn(WIDTH, 3, 7, 7),  # a teacher copy, not the encoder
    }
    return {"state_dict": {**state, **heads}, "epoch": 3, "global_step": 300, "hyper_parameters": {"lr": 0.3, "name": "simclr"}}


# ---------------------------------------------------------------- checkpoints


def test_torchvision_layout_has_resnet18_key_count(source):
    # torchvision's resnet18 state dict has 122 entries, two of them fc: the layouts line up one to one
    assert len(backbone_state(source, torchvision_name)) == 120


def test_solo_learn_checkpoint_gives_the_source_features(tmp_path, source, images):
    path = tmp_path / "simclr-cifar.ckpt"
    torch.save(solo_learn_checkpoint(source), path)
    encoder, info = load_foreign_encoder(path, mean=MEAN, std=STD)
    same_features(encoder, source, images)
    assert encoder.feature_dim == 8 * WIDTH
    assert info["source"] == "solo-learn" and info["format"] == "lightning" and info["mapped_keys"] == 120
    assert info["path"] == str(path) and info["architecture"]["width"] == WIDTH
    torch.testing.assert_close(encoder.normalize.mean.flatten(), torch.tensor(MEAN))
    # forcing the format gives the same; other normalization gives other features
    forced, _ = load_foreign_encoder(str(path), mean=MEAN, std=STD, format="solo-learn")
    same_features(forced, source, images)
    other, _ = load_foreign_encoder(path)
    with torch.no_grad():
        assert not torch.allclose(other(images), source(images))


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


def test_imagenet_stem_is_a_one_line_error(tmp_path, source):
    ckpt = solo_learn_checkpoint(source)
    ckpt["state_dict"]["backbone.conv1.weight"] = torch.randn(WIDTH, 3, 7, 7)
    torch.save(ckpt, tmp_path / "imagenet.ckpt")
    message = one_line_error(tmp_path / "imagenet.ckpt", "7x7")
    assert "'conv1.weight'" in message and "module:function" in message


def test_missing_unexpected_and_misshaped_keys_are_one_line_errors(tmp_path, source):
    ckpt = solo_learn_checkpoint(source)
    del ckpt["state_dict"]["backbone.layer3.1.bn2.running_var"]
    torch.save(ckpt, tmp_path / "missing.ckpt")
    one_line_error(tmp_path / "missing.ckpt", r"lacks the backbone key .*stages\.2\.1\.bn2\.running_var")

    ckpt = solo_learn_checkpoint(source)
    ckpt["state_dict"]["backbone.layer1.2.conv1.weight"] = torch.randn(WIDTH, WIDTH, 3, 3)  # a ResNet-34 block
    torch.save(ckpt, tmp_path / "r34.ckpt")
    one_line_error(tmp_path / "r34.ckpt", r"unexpected backbone key 'layer1\.2\.conv1\.weight'")

    ckpt = solo_learn_checkpoint(source)
    ckpt["state_dict"]["backbone.layer1.0.conv3.weight"] = torch.randn(WIDTH, WIDTH, 1, 1)  # a bottleneck
    torch.save(ckpt, tmp_path / "r50.ckpt")
    one_line_error(tmp_path / "r50.ckpt", r"'layer1\.0\.conv3\.weight' has no counterpart")

    torch.save(solo_learn_checkpoint(source), tmp_path / "rgb.ckpt")
    one_line_error(tmp_path / "rgb.ckpt", r"'conv1\.weight' has shape \(4, 3, 3, 3\), expected \(4, 1, 3, 3\)", in_channels=1)


def test_unreadable_and_unsafe_files_are_one_line_errors(tmp_path, source):
    ckpt = solo_learn_checkpoint(source)
    ckpt["hyper_parameters"] = argparse.Namespace(lr=0.3)  # not loadable with weights_only
    torch.save(ckpt, tmp_path / "pickled.ckpt")
    message = one_line_error(tmp_path / "pickled.ckpt", "does not unpickle")
    assert "argparse.Namespace" in message and "state_dict" in message and "weights_only=False" in message

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    one_line_error(tmp_path / "junk.pth", "cannot read")
    torch.save({"a.b": torch.zeros(2)}, tmp_path / "other.pth")
    one_line_error(tmp_path / "other.pth", "no ResNet backbone keys")
    one_line_error(tmp_path / "absent.ckpt", "not found")


def test_forced_format_must_match_the_keys(tmp_path, source):
    torch.save(solo_learn_checkpoint(source), tmp_path / "solo.ckpt")
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
    model = _Flat()
    model.feature_dim = 5
    return model


def not_a_module():
    return lambda x: x


def image_map() -> nn.Module:
    return nn.Identity()


def test_module_function_spec(images):
    encoder, info = load_foreign_encoder("test_foreign:tiny_encoder", mean=MEAN, std=STD)
    assert isinstance(encoder, _Flat) and encoder.feature_dim == 5 and not encoder.training
    assert info == {"source": "module", "path": "test_foreign:tiny_encoder", "format": "module", "mapped_keys": 0, "feature_dim": 5}
    assert encoder(images).shape == (3, 5)
    encoder, _ = load_foreign_encoder("test_foreign:tiny_encoder_with_dim", format="module")
    assert encoder.feature_dim == 5


def test_module_function_errors():
    one_line_error("test_foreign:not_a_module", "not a torch.nn.Module")
    one_line_error("test_foreign:image_map", r"features \(B, D\)")
    one_line_error("test_foreign:absent", "has no 'absent'")
    one_line_error("no_such_module_here:build", "cannot import")
    one_line_error("just-a-name", "form 'package.module:function'", format="module")
