import pytest
import torch

from hpccl.core.errors import ConfigError
from hpccl.models import MODEL_KINDS, build_model, model_option_names

SMALL = {"mlp": {"hidden": [16]}, "cnn": {"width": 4}, "resnet18": {"width": 4}, "resnet50": {"width": 4},
         "vit": {"patch_size": 4, "width": 8, "depth": 1, "heads": 2}, "moe": {"hidden": 8, "num_layers": 2, "num_experts": 2}}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_output_shape(kind, shape):
    torch.manual_seed(0)
    model = build_model(kind, shape, 7, **SMALL[kind])
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    out.sum().backward()  # gradients flow through every builder's graph


@pytest.mark.parametrize("kind", ["resnet18", "resnet50"])
def test_resnet_imagenet_stem_small_input(kind):
    # The ImageNet stem and adaptive pooling must still work on small images.
    model = build_model(kind, (3, 32, 32), 5, stem="imagenet", width=4).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_mlp_vector_input():
    model = build_model("mlp", (20,), 3, hidden=(8, 8), dropout=0.5)
    assert model(torch.randn(2, 20)).shape == (2, 3)


@pytest.mark.parametrize("kind, expected", [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_resnet_parameter_counts_match_torchvision(kind, expected):
    model = build_model(kind, (3, 224, 224), 1000, stem="imagenet")
    assert n_params(model) == expected


def test_resnet_stems_and_init():
    cifar = build_model("resnet18", (3, 32, 32), 10, stem="cifar", width=8)
    imnet = build_model("resnet18", (3, 32, 32), 10, stem="imagenet", width=8)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    assert imnet.conv1.kernel_size == (7, 7) and imnet.conv1.stride == (2, 2)
    assert isinstance(imnet.maxpool, torch.nn.MaxPool2d)
    # auto picks the CIFAR stem for small images and the ImageNet one for large ones.
    assert build_model("resnet18", (3, 32, 32), 10, width=4).conv1.kernel_size == (3, 3)
    assert build_model("resnet18", (3, 224, 224), 10, width=4).conv1.kernel_size == (7, 7)
    assert build_model("resnet18", (5, 32, 32), 10, width=4).conv1.in_channels == 5
    assert torch.all(cifar.layer1[0].bn2.weight == 1)
    zero = build_model("resnet50", (3, 32, 32), 10, width=4, zero_init_residual=True)
    assert torch.all(zero.layer1[0].bn3.weight == 0) and torch.all(zero.layer1[0].bn1.weight == 1)
    zero18 = build_model("resnet18", (3, 32, 32), 10, width=4, zero_init_residual=True)
    assert torch.all(zero18.layer4[1].bn2.weight == 0)


def test_model_option_names():
    assert model_option_names("mlp") == {"hidden", "dropout"}
    assert model_option_names("cnn") == {"width"}
    for kind in ("resnet18", "resnet50"):
        assert model_option_names(kind) == {"stem", "width", "zero_init_residual"}


def test_unknown_kind_names_known_kinds():
    with pytest.raises(ConfigError, match=r"'vgg'.*cnn, mlp, moe, resnet18, resnet50, vit"):
        build_model("vgg", (3, 32, 32), 10)
    with pytest.raises(ConfigError, match="vgg"):
        model_option_names("vgg")


def test_unknown_option():
    with pytest.raises(ConfigError, match=r"depth.*'cnn'.*width"):
        build_model("cnn", (3, 32, 32), 10, depth=3)


@pytest.mark.parametrize("kind, shape, options", [
    ("resnet18", (3, 32, 32), {"stem": "tiny"}),
    ("resnet18", (3, 32, 32), {"width": 0}),
    ("cnn", (3, 32, 32), {"width": "wide"}),
    ("mlp", (10,), {"hidden": "big"}),
    ("mlp", (10,), {"dropout": 1.5}),
    ("cnn", (64,), {}),          # image model on vector data
    ("cnn", (3, 2, 2), {}),       # too small for two poolings
])
def test_bad_option_values(kind, shape, options):
    with pytest.raises(ConfigError):
        build_model(kind, shape, 10, **options)
