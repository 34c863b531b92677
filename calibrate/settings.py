"""YAML settings for `patchcore-edge calibrate --config FILE` (pydantic, unknown keys rejected)."""

from __future__ import annotations

from pathlib import Path

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.backbone import DEFAULT_BACKBONE, parse_strides
from edge.config import load_yaml_model
from edge.errors import ConfigError
from edge.geometry import parse_input_size, parse_tiles

from .threshold import DEFAULT_MAX_FALSE_REJECT, DEFAULT_RULE, DEFAULT_TARGET


def _as_value_error(parse, value) -> None:
    """pydantic reports ValueErrors with the field's name; ours carry the accepted forms."""
    try:
        parse(value)
    except ConfigError as e:
        raise ValueError(str(e)) from None


class ThresholdSettings(BaseModel):
    """`threshold:` in the YAML: how the pass/fail boundary is set (calibrate/threshold.py)."""

    model_config = ConfigDict(extra="forbid")

    rule: Literal["target", "max3sigma"] = Field(DEFAULT_RULE, description="'target' (a false-reject rate on "
                                                 "good parts) or 'max3sigma' (the rule before issue 16)")
    target_false_reject: float = Field(DEFAULT_TARGET, gt=0.0, lt=0.5,
                                       description="share of good parts the threshold may reject, e.g. 0.01")
    reject_all_bad: bool = Field(False, description="lower the threshold until every --bad-images image fails")
    max_false_reject: float = Field(DEFAULT_MAX_FALSE_REJECT, gt=0.0, lt=0.5,
                                    description="the false-reject budget reject_all_bad may spend")


class CalibrateSettings(BaseModel):
    """Every CLI option of `calibrate`, readable from YAML; command-line flags override it."""

    model_config = ConfigDict(extra="forbid")

    images: Path | None = Field(None, description="folder of good images")
    output: Path | None = Field(None, description="model directory to write")
    backbone: str = Field(DEFAULT_BACKBONE, description="'efficientnet_lite0' (embedded) or a timm name")
    weights: Path | None = Field(None, description="local weights file for non-default backbones")
    input_size: int | str | None = Field(None, description="network input: 224 (square), '256x192' (W x H) or "
                                         "'short:224' (the images' aspect); default: the backbone's preset")
    tiles: str | None = Field(None, description="'COLSxROWS' overlapping tiles, each scored at the input size")
    tile_overlap: float = Field(0.1, ge=0.0, lt=0.5, description="fraction of a tile shared with its neighbour")
    tile_merge: Literal["max", "mean"] = Field("max", description="anomaly map where tiles overlap")

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, v):
        if v is not None:
            _as_value_error(parse_input_size, v)
        return v

    @field_validator("tiles")
    @classmethod
    def _tiles(cls, v):
        if v is not None:
            _as_value_error(parse_tiles, v)
        return v
    coreset_ratio: float | None = Field(None, gt=0.0, le=1.0,
                                        description="fraction of patches kept in the bank (default: preset)")
    preset: str | None = Field(None, description="a named preset, e.g. 'accurate' (slower, more accurate); "
                               "default: the backbone's own")
    layers: str | list[int] | None = Field(None, description="feature stages by stride: '8,16' (the paper's), "
                                           "'4,8,16' (finer detail) or [8, 16]; default: the backbone's preset")
    min_bank: int | None = Field(None, ge=0, le=1_000_000,
                                 description="floor on the bank size in vectors (default: the backbone's preset)")

    @field_validator("layers")
    @classmethod
    def _layers(cls, v):
        if v is not None:
            _as_value_error(parse_strides, v)
        return v
    projection_dim: int = Field(128, ge=1, le=4096, description="random projection dims for the greedy search")
    feature_dim: int | None = Field(None, ge=8, le=4096, description="reduce patch features to this many dims")
    holdout: float = Field(0.2, gt=0.0, lt=1.0, description="fraction of images held out for the threshold")
    seed: int = Field(0, ge=0, description="seed for projection, split and coreset start")
    keep_versions: int = Field(5, ge=1, le=100, description="model versions kept for rollback")
    threshold: ThresholdSettings = Field(default_factory=ThresholdSettings)
    bad_images: Path | None = Field(None, description="folder of known-bad images: their escape rate is reported")


def load_settings(path: str | Path) -> CalibrateSettings:
    """Read and validate a YAML file; ConfigError names the offending key."""
    return load_yaml_model(path, CalibrateSettings)
