import pytest
import torch

from contrastlab.errors import ContrastlabError
from contrastlab.models import build_encoder, classifier, linear_classifier, projection_head, resnet18, tiny_cnn


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_resnet18_parameter_count_matches_the_design():
    encoder = resnet18(width=64)
    assert n_params(encoder) == 11_168_832
    assert n_params(classifier(encoder, linear_classifier(encoder.feature_dim, 10))) == 11_173_962
    assert encoder.feature_dim == 512


def test_resnet18_output_shape_and_no_maxpool():
    encoder = resnet18(width=8).eval()
    assert encoder.feature_dim == 64
    assert encoder(torch.rand(3, 3, 32, 32)).shape == (3, 64)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in encoder.modules())
    stem = encoder.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.bias is None


def test_normalization_lives_inside_the_model():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    encoder = resnet18(width=8, mean=mean, std=std).eval()
    assert torch.allclose(encoder.normalize.mean.flatten(), torch.tensor(mean))
    x = torch.rand(2, 3, 16, 16)
    plain = resnet18(width=8).eval()
    plain.load_state_dict({k: v for k, v in encoder.state_dict().items() if not k.startswith("normalize")}, strict=False)
    normalized = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(encoder(x), plain(normalized), atol=1e-5)


def test_init_is_kaiming_fan_out_with_unit_bn():
    encoder = resnet18(width=8)
    bn = encoder.stem[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    conv = encoder.stages[3][0].conv1  # fan_out = 64 * 3 * 3
    assert abs(conv.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 0.01


def test_heads_and_tiny_cnn():
    head = projection_head(16, out_dim=8)
    z = head(torch.randn(5, 16))
    assert z.shape == (5, 8) and torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
    cnn = tiny_cnn(width=4, in_channels=1)
    assert cnn(torch.rand(2, 1, 12, 12)).shape == (2, cnn.feature_dim)


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ContrastlabError, match="unknown encoder 'vgg'.*resnet18.*tiny_cnn"):
        build_encoder("vgg")
