"""PatchCore patch features as one ONNX-exportable module: trunk + local aggregation.

Conventions (Roth et al. 2022, section 3.1):
- mid-level stages of an ImageNet CNN (the paper: stride 8 and 16; any 1-4 strides can be
  chosen, see backbone.PRESETS);
- each map gets 3x3 local average pooling, stride 1, padding 1 (the patch neighbourhood);
- the deeper maps are upsampled bilinearly to the shallowest grid; channels are concatenated;
- optionally the channels are reduced to a fixed dimension by averaging adjacent channels
  (the official implementation's adaptive average pooling, written as a fixed 1x1 conv so
  it exports to ONNX/TensorRT).
Input: normalised images (B, 3, H, W). Output: (B, D, H/s, W/s) patch features, s the shallower stage's stride.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import DEFAULT_BACKBONE, STAGE_STRIDES, BackboneInfo, create_classifier, mid_level_layers


def channel_average_matrix(in_dim: int, out_dim: int) -> torch.Tensor:
    """(out_dim, in_dim) matrix equal to adaptive_avg_pool1d over the channel axis."""
    m = torch.zeros(out_dim, in_dim)
    for i in range(out_dim):
        start = (i * in_dim) // out_dim
        end = -((-(i + 1) * in_dim) // out_dim)  # ceil, as adaptive pooling does
        m[i, start:end] = 1.0 / (end - start)
    return m


class PatchFeatures(nn.Module):
    """Trunk truncated after the deepest chosen stage, plus PatchCore's aggregation."""

    def __init__(self, trunk: nn.Module, layers: tuple[str, ...], in_dims: tuple[int, ...], feature_dim: int | None):
        super().__init__()
        self.trunk = trunk
        self.layers = layers
        total = sum(in_dims)
        self.feature_dim = feature_dim if feature_dim and feature_dim < total else total
        if self.feature_dim < total:
            self.register_buffer("reduce", channel_average_matrix(total, self.feature_dim)[:, :, None, None])
        else:
            self.reduce = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.trunk(x)
        pooled = [F.avg_pool2d(maps[name], 3, stride=1, padding=1) for name in self.layers]
        grid = pooled[0].shape[-2:]
        feats = torch.cat([pooled[0]] + [F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
                                         for m in pooled[1:]], dim=1)
        if self.reduce is not None:
            feats = F.conv2d(feats, self.reduce)
        return feats


def freeze_same_padding(module: nn.Module, input_size: int | tuple[int, int]) -> int:
    """Replace timm's dynamic TF-"same" convs by a constant pad + plain conv for this input size.

    timm computes "same" padding at run time from the input shape, which puts Shape/Gather/
    Pad arithmetic into the ONNX graph and stops TensorRT from treating it as static. Our
    input size (S or (W, H)) is fixed per model, so the padding is a constant (per axis: a
    non-square input pads its two axes differently). Returns how many were replaced.
    """
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, inp, n=n: sizes.__setitem__(n, tuple(inp[0].shape[-2:])))
        for n, m in module.named_modules()
        if isinstance(m, Conv2dSame)
    ]
    with torch.no_grad():
        w, h = (input_size, input_size) if isinstance(input_size, int) else input_size
        module(torch.zeros(1, 3, h, w))
    for h in hooks:
        h.remove()
    for name, hw in sizes.items():
        parent_name, _, leaf = name.rpartition(".")
        old = module.get_submodule(name)
        conv = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, 0, old.dilation,
                         old.groups, old.bias is not None)
        conv.weight, conv.bias = old.weight, old.bias
        pad = nn.ZeroPad2d(pad_same_arg(list(hw), old.weight.shape[-2:], old.stride, old.dilation))
        setattr(module.get_submodule(parent_name) if parent_name else module, leaf, nn.Sequential(pad, conv))
    return len(sizes)


def build_extractor(
    name: str = DEFAULT_BACKBONE,
    weights: str | Path | None = None,
    feature_dim: int | None = None,
    input_size: int | tuple[int, int] = 224,  # S or (W, H)
    strides: tuple[int, ...] = STAGE_STRIDES,
) -> tuple[PatchFeatures, BackboneInfo]:
    """Build the eval-mode patch feature module (for one input size) and its manifest record."""
    from timm.models import create_feature_extractor

    model, sha, source = create_classifier(name, weights)
    layers, chans = mid_level_layers(model, tuple(strides))
    trunk = create_feature_extractor(model, {layer: layer for layer in layers})
    cfg = model.pretrained_cfg
    info = BackboneInfo(
        name=name,
        timm_name=model.default_cfg.get("architecture", name),
        layers=layers,
        channels=chans,
        mean=tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))),
        weights_sha256=sha,
        weights_source=source,
    )
    extractor = PatchFeatures(trunk, layers, chans, feature_dim).eval()
    for p in extractor.parameters():
        p.requires_grad_(False)
    freeze_same_padding(extractor, input_size)
    return extractor, info
