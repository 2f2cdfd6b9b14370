"""A plain Vision Transformer whose state-dict names follow timm's ``vit_base_patch16_224``.

Names: ``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.N.norm1``,
``blocks.N.attn.qkv``, ``blocks.N.attn.proj``, ``blocks.N.norm2``, ``blocks.N.mlp.fc1``,
``blocks.N.mlp.fc2``, ``norm``, ``head``; so a timm checkpoint saved as a plain state dict
(``torch.save(timm_model.state_dict(), path)``) loads with :func:`load_pretrained`.
Classification uses the class token after the final norm (timm's default ``global_pool='token'``).
LayerNorm eps is 1e-6, as in timm's ViTs.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from hpccl.core.errors import HpcclError

__all__ = ["VisionTransformer", "VIT_PRESETS", "vit_from_preset", "vit_b16", "load_pretrained"]

# Shapes of the usual ViTs (timm names: vit_{tiny,small,base,large}_patch16_224).
VIT_PRESETS = {
    "tiny": dict(patch_size=16, width=192, depth=12, heads=3, mlp_ratio=4.0),
    "small": dict(patch_size=16, width=384, depth=12, heads=6, mlp_ratio=4.0),
    "base": dict(patch_size=16, width=768, depth=12, heads=12, mlp_ratio=4.0),
    "large": dict(patch_size=16, width=1024, depth=24, heads=16, mlp_ratio=4.0),
}


class PatchEmbed(nn.Module):
    def __init__(self, in_chans, width, patch_size):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D]


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT with a class token. ``image_size`` may be an int or (H, W); both must be multiples
    of ``patch_size``. ``width % heads == 0``."""

    def __init__(self, image_size=224, patch_size=16, in_chans=3, num_classes=1000, width=768,
                 depth=12, heads=12, mlp_ratio=4.0):
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if h % patch_size or w % patch_size:
            raise ValueError(f"image size {(h, w)} is not a multiple of patch size {patch_size}")
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.image_size, self.patch_size = (h, w), patch_size
        self.width, self.depth, self.heads, self.mlp_ratio = width, depth, heads, mlp_ratio
        self.num_classes = num_classes
        num_patches = (h // patch_size) * (w // patch_size)
        self.patch_embed = PatchEmbed(in_chans, width, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, num_classes)
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # Conv patch embedding: lecun-normal-ish, as a linear layer over flattened patches.
        fan_in = self.patch_embed.proj.in_channels * self.patch_size ** 2
        nn.init.trunc_normal_(self.patch_embed.proj.weight, std=math.sqrt(1.0 / fan_in))
        nn.init.zeros_(self.patch_embed.proj.bias)

    def features(self, x):
        """The final-norm class-token embedding, [B, width]. Inputs of another size than
        ``image_size`` are resized bilinearly first (e.g. 32x32 CIFAR for a 224 checkpoint)."""
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]

    def forward(self, x):
        return self.head(self.features(x))


def vit_from_preset(preset: str, image_size=224, in_chans=3, num_classes=1000, **overrides) -> VisionTransformer:
    try:
        shape = dict(VIT_PRESETS[preset])
    except KeyError:
        raise ValueError(f"unknown ViT preset {preset!r}; known: {', '.join(VIT_PRESETS)}") from None
    shape.update(overrides)
    return VisionTransformer(image_size=image_size, in_chans=in_chans, num_classes=num_classes, **shape)


def vit_b16(num_classes=1000, image_size=224, in_chans=3) -> VisionTransformer:
    """ViT-B/16 (86,567,656 parameters at 224x224 with 1000 classes, as timm's)."""
    return vit_from_preset("base", image_size=image_size, in_chans=in_chans, num_classes=num_classes)


def _listing(keys, limit=12):
    keys = sorted(keys)
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_pretrained(model: nn.Module, path, exclude=()) -> None:
    """Load a local plain state-dict file (``torch.save(model.state_dict(), path)``) into ``model``.

    Every key must match both ways, with equal shapes; otherwise :class:`HpcclError` names the
    file and the missing, unexpected or mis-shaped keys. ``exclude``: key prefixes neither
    loaded nor required, e.g. ``("head.",)`` to keep a fresh classifier for another class count.
    Loads with ``weights_only=True`` (no code from the file runs).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise HpcclError(f"pretrained weights file {path!r} does not exist. HINT: give the path of a "
                         "plain state dict saved with torch.save(model.state_dict(), path).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise HpcclError(f"cannot read pretrained weights file {path!r}: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HpcclError(f"pretrained weights file {path!r} is not a plain state dict (a mapping "
                         "of parameter names to tensors). HINT: save model.state_dict(), not a "
                         "training checkpoint or a whole model.")
    exclude = tuple(exclude)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(exclude)} if exclude else \
        dict(model.state_dict())
    state = {k: v for k, v in state.items() if not k.startswith(exclude)} if exclude else state
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    shapes = sorted(f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
                    for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} key(s) with another shape: {_listing(shapes)}")
        raise HpcclError(f"pretrained weights file {path!r} does not match the model: "
                         + "; ".join(parts) + ". HINT: check the model's shape options (width, depth, "
                         "patch size, image size, classes) against the checkpoint; use exclude=('head.',) "
                         "to keep a fresh classifier head.")
    model.load_state_dict(state, strict=not exclude)
