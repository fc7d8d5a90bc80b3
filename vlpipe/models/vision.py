"""Image encoder: a timm ViT (class token, no head) returning every token, and weight loading.

Parameter names are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.*``,
``norm``), the same names an ALBEF checkpoint uses under ``visual_encoder.``. Loading weights made
for another resolution interpolates the position embeddings on the patch grid (bicubic, class token
kept as is), as the paper does when fine-tuning at 384 px from 256 px pre-training.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vlpipe.config import VisionConfig
from vlpipe.errors import VlpipeError


class LoadReport(NamedTuple):
    """What a weight load did: keys the model lacked a value for, file keys it did not use,
    and keys that were resized on the way in (position tables)."""

    missing: list[str]
    unexpected: list[str]
    reshaped: list[str]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise VlpipeError(f"model.vision.stem_norm {kind!r} is not one of group, batch")


class ConvStemEmbed(PatchEmbed):
    """Patch embedding by a small convolutional stem instead of one patchify convolution.

    ``log2(patch_size)`` 3x3 stride-2 convolutions (GroupNorm + ReLU, channels doubling up to the
    width) then a 1x1 projection, as in Xiao et al. 2021 ("Early Convolutions Help Transformers See
    Better"): the same token grid as a ``patch_size`` patchify stem, for a few percent more compute,
    and a small ViT trained from scratch learns faster with it (figures next to ``albef-tiny`` in
    :mod:`vlpipe.config`). Pretrained ViT weights (DeiT, ALBEF) need the plain ``patch`` stem.

    GroupNorm rather than BatchNorm: no running statistics, so a sample's features never depend on its
    batch, training and evaluation compute the same function, and DDP ranks need no statistics sync
    (BatchNorm measured a little better on the demo, mean 6.4 vs 5.9, at that price).
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, norm="group", **kw):
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, **kw)
        steps = int(math.log2(patch_size))
        if 2**steps != patch_size:
            raise VlpipeError(f"the conv stem needs a power-of-two patch size, not {patch_size}")
        layers: list[nn.Module] = []
        channels = in_chans
        for i in range(steps):
            out = max(16, embed_dim // 2 ** (steps - 1 - i))
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), _norm(norm, out), nn.ReLU(inplace=True)]
            channels = out
        layers.append(nn.Conv2d(channels, embed_dim, 1))
        self.proj = nn.Sequential(*layers)


class CNNStemEmbed(PatchEmbed):
    """Patch embedding by a small VGG-style network: ``log2(patch_size)`` stages of two 3x3 convolutions
    (GroupNorm + ReLU), the first convolution of the first stage with stride 2 and a 2x2 max-pool after
    every later stage, channels doubling up to the width; then a 1x1 projection. The same token grid
    as a ``patch_size`` patchify stem (a ViT-hybrid in the sense of Dosovitskiy et al. 2021).

    Why it exists: a from-scratch ViT this small has a long plateau before it tells small objects apart
    (a supervised probe on the synthetic world: object precision stays at the label prior for ~1,200
    steps with the ``conv`` stem); two convolutions per stage and max-pooling give the translation
    invariance that the transformer would otherwise have to learn first.
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, norm="group", **kw):
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, **kw)
        steps = int(math.log2(patch_size))
        if 2**steps != patch_size or steps < 1:
            raise VlpipeError(f"the cnn stem needs a power-of-two patch size >= 2, not {patch_size}")
        layers: list[nn.Module] = []
        channels = in_chans
        for i in range(steps):
            out = max(16, embed_dim // 2 ** (steps - 1 - i))
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for j in range(2):
                stride = 2 if (i, j) == (0, 0) else 1
                layers += [nn.Conv2d(channels, out, 3, stride=stride, padding=1, bias=False),
                           _norm(norm, out), nn.ReLU(inplace=True)]
                channels = out
        layers.append(nn.Conv2d(channels, embed_dim, 1))
        self.proj = nn.Sequential(*layers)


class VisionEncoder(VisionTransformer):
    """A timm ``VisionTransformer`` whose ``forward(images [B, 3, H, W])`` returns every token
    [B, 1 + N, width] after the final LayerNorm (``forward_features``); no classifier head.

    Being the timm class itself (not a wrapper), its parameter names are timm's, so ALBEF's
    ``visual_encoder.*`` keys map 1:1.
    """

    def __init__(self, cfg: VisionConfig):
        if cfg.stem not in _STEMS:
            raise VlpipeError(f"model.vision.stem {cfg.stem!r} is not one of {', '.join(_STEMS)}")
        super().__init__(
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.width,
            depth=cfg.depth,
            num_heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=True,
            class_token=True,
            num_classes=0,
            global_pool="token",
            drop_path_rate=cfg.drop_path,
            embed_layer=_STEMS[cfg.stem] if cfg.stem == "patch" else functools.partial(_STEMS[cfg.stem], norm=cfg.stem_norm),
        )
        self.width = cfg.width

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.forward_features(images)


_STEMS = {"patch": PatchEmbed, "conv": ConvStemEmbed, "cnn": CNNStemEmbed}


def build_vision(cfg: VisionConfig) -> VisionEncoder:
    return VisionEncoder(cfg)


def interpolate_pos_embed(pos_embed: torch.Tensor, new_grid: int | tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
    """Resize ``pos_embed`` [1, num_prefix + h*w, D] to a ``new_grid`` patch grid.

    The prefix (class) tokens are kept unchanged; the patch part is laid out on its (square) grid and
    resized bicubically. Returns [1, num_prefix + H*W, D].
    """
    if isinstance(new_grid, int):
        new_grid = (new_grid, new_grid)
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    n = patches.shape[1]
    old = math.isqrt(n)
    if old * old != n:
        raise VlpipeError(f"pos_embed has {n} patch positions, not a square grid; cannot interpolate")
    if (old, old) == tuple(new_grid):
        return pos_embed
    dim = patches.shape[-1]
    grid = patches.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, patches], dim=1)


KNOWN_PREFIXES = ("", "visual_encoder.", "module.visual_encoder.", "module.")


def load_vision_weights(
    model: VisionTransformer,
    state_dict: dict[str, torch.Tensor],
    prefix: str | None = None,
    strict: bool = False,
) -> LoadReport:
    """Load timm-named ViT weights into ``model`` (a :class:`VisionEncoder` or any timm ViT).

    Only keys starting with ``prefix`` are read, the prefix stripped; None (default) picks the first
    of "", "visual_encoder.", "module.visual_encoder.", "module." under which ``pos_embed`` is found
    (a bare timm state dict, an ALBEF checkpoint, the same saved from DDP). ``pos_embed`` is interpolated when the patch grid differs (listed in
    ``reshaped``). Any other shape mismatch is an error. ``strict`` turns missing or unexpected keys
    into an error too; otherwise they are returned for the caller to report.
    """
    vit = model
    if prefix is None:
        prefix = next((p for p in KNOWN_PREFIXES if p + "pos_embed" in state_dict), "")
    own = vit.state_dict()
    incoming = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    reshaped: list[str] = []
    to_load: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in incoming.items():
        if key not in own:
            unexpected.append(prefix + key)
            continue
        if key == "pos_embed" and value.shape != own[key].shape:
            grid = tuple(vit.patch_embed.grid_size)
            value = interpolate_pos_embed(value, grid, num_prefix=vit.num_prefix_tokens)
            reshaped.append(prefix + key)
        if value.shape != own[key].shape:
            raise VlpipeError(
                f"vision weight {prefix + key} has shape {tuple(value.shape)}, the model wants "
                f"{tuple(own[key].shape)}: the checkpoint's ViT width/patch size differs from model.vision"
            )
        to_load[key] = value
    missing = [prefix + k for k in own if k not in to_load]
    if strict and (missing or unexpected):
        raise VlpipeError(
            f"vision weights do not match: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    vit.load_state_dict(to_load, strict=False)
    return LoadReport(missing, sorted(unexpected), reshaped)
