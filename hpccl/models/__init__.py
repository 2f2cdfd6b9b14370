"""Model zoo: ``build_model(kind, input_shape, num_classes, **options)``.

Each builder below declares its options as keyword arguments with defaults; those
signatures are the single source of truth for ``model_option_names`` (what a config may set)
and for the defaults. Builders check option values and raise :class:`ConfigError`, because
the values come straight from a user's job file.

The builders import their model's module (and torch) when called, not when this package is
imported: checking a job file's model section (``hpccl validate``, ``hpccl submit`` on a
login node) reads the signatures without importing torch.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import TYPE_CHECKING, Callable

from hpccl.core.errors import ConfigError
from hpccl.core.exports import lazy_exports

__getattr__, _, _models = lazy_exports(__name__, {
    "hpccl.models.mlp": "MLP", "hpccl.models.cnn": "SmallCNN", "hpccl.models.moe": "MoENet",
    "hpccl.models.resnet": "ResNet", "hpccl.models.vit": "VisionTransformer"})
__all__ = ["build_model", "MODEL_KINDS", "model_option_names", *_models]

if TYPE_CHECKING:
    import torch

STEMS = ("auto", "cifar", "imagenet")


# Far above any width that fits a GPU; past 2**63 torch raised a TypeError (overflow) instead.
MAX_WIDTH = 1 << 24


def _positive_int(kind, key, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= MAX_WIDTH:
        raise ConfigError(f"model option {key!r} of {kind!r} must be a positive integer of at most {MAX_WIDTH}, "
                          f"got {value!r}.")
    return int(value)


def _image_shape(kind, input_shape):
    if len(input_shape) != 3:
        raise ConfigError(
            f"model {kind!r} needs image samples [C, H, W], but the dataset's samples have shape "
            f"{tuple(input_shape)}. Use model 'mlp' for vector data.")
    return input_shape


def _build_mlp(input_shape, num_classes, hidden=(256, 256), dropout=0.0):
    if isinstance(hidden, int):
        hidden = (hidden,)
    if not isinstance(hidden, (list, tuple)):
        raise ConfigError(f"model option 'hidden' of 'mlp' must be a list of layer widths, got {hidden!r}.")
    hidden = tuple(_positive_int("mlp", "hidden", h) for h in hidden)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model option 'dropout' of 'mlp' must be a number in [0, 1), got {dropout!r}.")
    from hpccl.models.mlp import MLP
    return MLP(input_shape, num_classes, hidden=hidden, dropout=float(dropout))


def _build_cnn(input_shape, num_classes, width=32):
    _image_shape("cnn", input_shape)
    if min(input_shape[1:]) < 4:
        raise ConfigError(f"model 'cnn' needs images of at least 4x4 pixels, got {tuple(input_shape)}.")
    from hpccl.models.cnn import SmallCNN
    return SmallCNN(input_shape, num_classes, width=_positive_int("cnn", "width", width))


def _resnet_builder(kind):
    def build(input_shape, num_classes, stem="auto", width=64, zero_init_residual=False):
        _image_shape(kind, input_shape)
        if stem not in STEMS:
            raise ConfigError(f"model option 'stem' of {kind!r} must be one of {', '.join(STEMS)}; got {stem!r}.")
        if stem == "auto":
            # The ImageNet stem downsamples 4x before layer1; on small images (CIFAR,
            # Tiny ImageNet) that leaves layer4 with 1x1 or 2x2 maps and hurts accuracy.
            stem = "imagenet" if min(input_shape[1:]) >= 128 else "cifar"
        if not isinstance(zero_init_residual, bool):
            raise ConfigError(f"model option 'zero_init_residual' of {kind!r} must be true or false, "
                              f"got {zero_init_residual!r}.")
        from hpccl.models import resnet
        return getattr(resnet, kind)(input_shape, num_classes, stem=stem,
                                     width=_positive_int(kind, "width", width),
                                     zero_init_residual=zero_init_residual)
    build.__name__ = f"_build_{kind}"
    return build


def _build_vit(input_shape, num_classes, preset="base", patch_size=None, width=None, depth=None, heads=None,
               mlp_ratio=None, pretrained=None, image_size=None):
    # Shape options left at None come from the preset (base: ViT-B/16). image_size: the side
    # the model works at (inputs are resized to it, e.g. 224 for CIFAR on a 224 checkpoint).
    from hpccl.models.vit import VIT_PRESETS, VisionTransformer, load_pretrained
    _image_shape("vit", input_shape)
    if image_size is not None:
        input_shape = (input_shape[0], _positive_int("vit", "image_size", image_size),
                       _positive_int("vit", "image_size", image_size))
    if preset not in VIT_PRESETS:
        raise ConfigError(f"model option 'preset' of 'vit' must be one of {', '.join(VIT_PRESETS)}; got {preset!r}.")
    shape = dict(VIT_PRESETS[preset])
    for key, value in (("patch_size", patch_size), ("width", width), ("depth", depth), ("heads", heads)):
        if value is not None:
            shape[key] = _positive_int("vit", key, value)
    if mlp_ratio is not None:
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
            raise ConfigError(f"model option 'mlp_ratio' of 'vit' must be a positive number, got {mlp_ratio!r}.")
        shape["mlp_ratio"] = float(mlp_ratio)
    if input_shape[1] % shape["patch_size"] or input_shape[2] % shape["patch_size"]:
        raise ConfigError(f"model 'vit' needs image sides that are multiples of patch_size {shape['patch_size']}, "
                          f"got {tuple(input_shape)}.")
    if shape["width"] % shape["heads"]:
        raise ConfigError(f"model option 'width' of 'vit' ({shape['width']}) must be a multiple of "
                          f"'heads' ({shape['heads']}).")
    model = VisionTransformer(image_size=tuple(input_shape[1:]), in_chans=input_shape[0],
                              num_classes=num_classes, **shape)
    if pretrained is not None:
        if not isinstance(pretrained, str):
            raise ConfigError(f"model option 'pretrained' of 'vit' must be a file path, got {pretrained!r}.")
        # The classifier is the job's own (its class count), never the checkpoint's.
        load_pretrained(model, pretrained, exclude=("head.",))
    return model


def _build_moe(input_shape, num_classes, hidden=64, num_layers=2, num_experts=1):
    # ALMA's growing model: learner growing_moe splits experts as the stream goes on.
    from hpccl.models.moe import MoENet
    return MoENet(input_shape, num_classes, hidden=_positive_int("moe", "hidden", hidden),
                  num_layers=_positive_int("moe", "num_layers", num_layers),
                  num_experts=_positive_int("moe", "num_experts", num_experts))


MODEL_KINDS: dict[str, Callable[..., "torch.nn.Module"]] = {
    "mlp": _build_mlp,
    "cnn": _build_cnn,
    "resnet18": _resnet_builder("resnet18"),
    "resnet50": _resnet_builder("resnet50"),
    "vit": _build_vit,
    "moe": _build_moe,
}


def _builder(kind: str):
    try:
        return MODEL_KINDS[kind]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model kind {kind!r}; known kinds: {', '.join(sorted(MODEL_KINDS))}.") from None


def model_option_names(kind: str) -> set[str]:
    """The options ``build_model`` accepts for ``kind`` (beyond shape and class count)."""
    params = inspect.signature(_builder(kind)).parameters
    return set(params) - {"input_shape", "num_classes"}


def model_option_defaults(kind: str) -> dict:
    """Default value of every option of ``kind``."""
    params = inspect.signature(_builder(kind)).parameters
    return {k: p.default for k, p in params.items() if k not in ("input_shape", "num_classes")}


def build_model(kind: str, input_shape, num_classes: int, **options) -> "torch.nn.Module":
    """Build a freshly initialised model for samples of ``input_shape`` ((D,) or (C, H, W))."""
    builder = _builder(kind)
    unknown = set(options) - model_option_names(kind)
    if unknown:
        known = ", ".join(sorted(model_option_names(kind))) or "none"
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} for model {kind!r}; "
                          f"known options: {known}.")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (1, 3) or math.prod(input_shape) < 1:
        raise ConfigError(f"model input shape must be (D,) or (C, H, W), got {input_shape}.")
    _positive_int(kind, "num_classes", num_classes)
    return builder(input_shape, int(num_classes), **options)


def place_model(model, device) -> "torch.nn.Module":
    """The model on ``device``; on a GPU, a network with convolutions in channels_last (NHWC)
    memory format, which cuDNN's tensor-core convolutions want (inputs follow:
    ``hpccl.data.pipeline``), so no layout transpose runs around every convolution."""
    import torch
    model = model.to(device)
    if torch.device(device).type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model

