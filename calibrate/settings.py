"""YAML settings for `patchcore-edge calibrate --config FILE` (pydantic, unknown keys rejected)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edge.backbone import DEFAULT_BACKBONE
from edge.config import load_yaml_model


class CalibrateSettings(BaseModel):
    """Every CLI option of `calibrate`, readable from YAML; command-line flags override it."""

    model_config = ConfigDict(extra="forbid")

    images: Path | None = Field(None, description="folder of good images")
    output: Path | None = Field(None, description="model directory to write")
    backbone: str = Field(DEFAULT_BACKBONE, description="'efficientnet_lite0' (embedded) or a timm name")
    weights: Path | None = Field(None, description="local weights file for non-default backbones")
    input_size: int | None = Field(None, ge=32, le=1024, multiple_of=16,
                                   description="square network input, px (default: the backbone's preset)")
    coreset_ratio: float | None = Field(None, gt=0.0, le=1.0,
                                        description="fraction of patches kept in the bank (default: preset)")
    projection_dim: int = Field(128, ge=1, le=4096, description="random projection dims for the greedy search")
    feature_dim: int | None = Field(None, ge=8, le=4096, description="reduce patch features to this many dims")
    holdout: float = Field(0.2, gt=0.0, lt=1.0, description="fraction of images held out for the threshold")
    seed: int = Field(0, ge=0, description="seed for projection, split and coreset start")
    keep_versions: int = Field(5, ge=1, le=100, description="model versions kept for rollback")


def load_settings(path: str | Path) -> CalibrateSettings:
    """Read and validate a YAML file; ConfigError names the offending key."""
    return load_yaml_model(path, CalibrateSettings)
