"""Calibration settings: one pydantic model for `patchcore-edge calibrate` (its flags and its
`--config` YAML), `evaluate` and `calibrate.build.calibrate()`, validated once.

The YAML file and the command line are merged as given (flags over file keys) and validated
together: a file validated on its own would have its preset defaults filled before a
`--preset` or `--backbone` flag could choose another preset. Unknown keys are rejected, and a
bad value is one ConfigError naming its flag, or its file and key. Relative paths in the file are
relative to the file's folder (as in the daemon's config); relative paths given as flags, to the
current directory. A bool is not a number here (`coreset_ratio: yes` is refused, edge/nobool.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.backbone import DEFAULT_BACKBONE, NAMED_PRESETS, NORMALIZATIONS, parse_strides, preset
from edge.config import load_yaml_model, plain_message
from edge.errors import ConfigError
from edge.geometry import Geometry, ShortSide, median_aspect, parse_input_size, parse_tiles, resolve_short_side
from edge.nobool import NoBoolNumbers

from .threshold import DEFAULT_MAX_FALSE_REJECT, DEFAULT_RULE, DEFAULT_TARGET

# command-line flags (argparse dests) whose values sit under `threshold:` in the YAML
THRESHOLD_FLAGS = {"threshold_rule": "rule", "target_false_reject": "target_false_reject",
                   "reject_all_bad": "reject_all_bad", "max_false_reject": "max_false_reject"}
NEEDS_IMAGES = "calibrate needs --images DIR and --output MODEL_DIR (or both in --config)"
# path settings: in a --config file, relative to the file's folder
PATH_KEYS = ("images", "output", "weights", "bad_images")
THRESHOLD_FORM = ("give a mapping such as {target_false_reject: 0.01} (keys: rule, target_false_reject, "
                  "reject_all_bad, max_false_reject), or leave it empty for the defaults")


def _as_value_error(parse, value):
    """pydantic reports ValueErrors with the field's name; ours carry the accepted forms."""
    try:
        return parse(value)
    except ConfigError as e:
        raise ValueError(str(e)) from None


class ThresholdSettings(NoBoolNumbers):
    """`threshold:` in the YAML: how the pass/fail boundary is set (calibrate/threshold.py)."""

    model_config = ConfigDict(extra="forbid")

    rule: Literal["target", "max3sigma"] = Field(DEFAULT_RULE, description="'target' (a false-reject rate on "
                                                 "good parts) or 'max3sigma' (the rule before issue 16)")
    target_false_reject: float = Field(DEFAULT_TARGET, gt=0.0, lt=0.5,
                                       description="share of good parts the threshold may reject, e.g. 0.01")
    reject_all_bad: bool = Field(False, description="lower the threshold until every --bad-images image fails")
    max_false_reject: float = Field(DEFAULT_MAX_FALSE_REJECT, gt=0.0, lt=0.5,
                                    description="the false-reject budget reject_all_bad may spend")


class CalibrationSettings(NoBoolNumbers):
    """What a calibration builds. After validation every preset default is filled in: `layers`
    is a tuple of strides, and input_size, coreset_ratio, min_bank, feature_dim and
    normalization hold the preset's value wherever none was given. Built in code (tests,
    benchmarks), a bad value raises pydantic's ValidationError; load_settings() turns it into
    one ConfigError line for the commands."""

    model_config = ConfigDict(extra="forbid")

    images: Path = Field(description="folder of good images")
    output: Path = Field(description="model directory to write")
    backbone: str = Field(DEFAULT_BACKBONE, description="'efficientnet_lite0' (embedded) or a timm name")
    weights: Path | None = Field(None, description="local weights file for non-default backbones")
    input_size: int | str | None = Field(None, description="network input: 224 (square), '256x192' (W x H) or "
                                         "'short:224' (the images' aspect); default: the backbone's preset")
    tiles: str | None = Field(None, description="'COLSxROWS' overlapping tiles, each scored at the input size")
    tile_overlap: float = Field(0.1, ge=0.0, lt=0.5, description="fraction of a tile shared with its neighbour")
    tile_merge: Literal["max", "mean"] = Field("max", description="anomaly map where tiles overlap")
    coreset_ratio: float | None = Field(None, gt=0.0, le=1.0,
                                        description="fraction of patches kept in the bank (default: preset)")
    preset: str | None = Field(None, description="a named preset, e.g. 'accurate' (slower, more accurate); "
                               "default: the backbone's own")
    layers: tuple[int, ...] | None = Field(None, description="feature stages by stride: '8,16' (the paper's), "
                                           "'4,8,16' (finer detail) or [8, 16]; default: the backbone's preset")
    min_bank: int | None = Field(None, ge=0, le=1_000_000,
                                 description="floor on the bank size in vectors (default: the backbone's preset)")
    score_top_k: int | None = Field(None, ge=1, le=10_000, description="image score = mean of the k highest patch "
                                    "scores (1: PatchCore's max); default: the backbone's preset")
    map_fine_weight: float | None = Field(None, ge=0.0, le=100.0, description="anomaly map: + this weight x the "
                                          "shallower stages' distance to the matched bank vector (0: distance "
                                          "alone); default: the backbone's preset")
    # no command-line flag: benchmarks/accuracy.py compares ImageNet's statistics with the backbone's own
    normalization: str | None = Field(None, description="'backbone' (the weights' own mean/std) or 'imagenet'; "
                                      "default: the backbone's preset")
    projection_dim: int = Field(128, ge=1, le=4096, description="random projection dims for the greedy search")
    feature_dim: int | None = Field(None, ge=8, le=4096, description="reduce patch features to this many dims")
    holdout: float = Field(0.2, gt=0.0, lt=1.0, description="fraction of images held out for the threshold")
    seed: int = Field(0, ge=0, description="seed for projection, split and coreset start")
    keep_versions: int = Field(5, ge=1, le=100, description="model versions kept for rollback")
    threshold: ThresholdSettings = Field(default_factory=ThresholdSettings)
    bad_images: Path | None = Field(None, description="folder of known-bad images: their escape rate is reported")

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, v):
        if v is None:  # `threshold:` with nothing under it (or all of it commented out): the defaults
            return {}
        if not isinstance(v, (dict, ThresholdSettings)):
            raise ValueError(f"{THRESHOLD_FORM}; got {type(v).__name__} {str(v)[:40]!r}")
        return v

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

    @field_validator("layers", mode="before")
    @classmethod
    def _layers(cls, v):
        # a list is checked before parse_strides, whose message repr's it: a YAML alias bomb of
        # a few hundred bytes is 10**9 items once printed (minutes and gigabytes, red team 2)
        if isinstance(v, (list, tuple)) and (len(v) > 4 or not all(type(x) in (int, str) for x in v)):
            raise ValueError("give the feature stages by stride: '8,16', '4,8,16' or a list of 1 to 4 "
                             "numbers such as [8, 16]")
        return v if v is None else _as_value_error(parse_strides, v)

    # Checks across fields raise ConfigError, which pydantic passes through unchanged: these
    # messages name the flags themselves, and a key path would add nothing.
    @model_validator(mode="after")
    def _fill_preset_and_check(self) -> CalibrationSettings:
        p = preset(self.backbone)
        if self.preset is not None:
            if self.preset not in NAMED_PRESETS:
                raise ConfigError(f"unknown preset {self.preset!r}; choose one of {sorted(NAMED_PRESETS)} "
                                  "or leave it out for the backbone's default")
            backbone, p = NAMED_PRESETS[self.preset]
            if self.backbone != backbone:
                raise ConfigError(f"preset {self.preset!r} is for backbone {backbone!r}, not {self.backbone!r}")
        for name in ("input_size", "coreset_ratio", "feature_dim", "min_bank", "normalization", "score_top_k",
                     "map_fine_weight"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(p, name))
        if self.layers is None:
            self.layers = p.strides
        if self.normalization not in ("backbone", *NORMALIZATIONS):
            raise ConfigError(f"normalization must be 'backbone' or one of {sorted(NORMALIZATIONS)}, "
                              f"got {self.normalization!r}")
        if self.threshold.reject_all_bad and self.bad_images is None:
            raise ConfigError("reject-all-bad needs --bad-images DIR (known-bad images to reject)")
        return self

    def geometry(self, paths: list[Path]) -> Geometry:
        """Network input W x H (short:N resolved on these images' median aspect) and tiling."""
        size = parse_input_size(self.input_size)
        tiles = parse_tiles(self.tiles or (1, 1))
        if isinstance(size, ShortSide):
            size = resolve_short_side(size.short, median_aspect(paths), tiles, self.tile_overlap)
        return Geometry(*size, *tiles, self.tile_overlap, self.tile_merge)


class CalibrationFile(BaseModel):
    """A `--config` file read as written (a mapping; its keys are checked with the flags)."""

    model_config = ConfigDict(extra="allow")


def load_settings(config: str | Path | None = None, /, **given) -> CalibrationSettings:
    """Settings from a YAML file (if any) with command-line values over it, validated once.

    `given`: argparse dests (a `calibrate` or `evaluate` namespace's vars()): the settings' fields
    and THRESHOLD_FLAGS; None is "not given", other names (func, force, ...) are the command's own."""
    data = load_yaml_model(config, CalibrationFile).model_extra if config else {}
    for key in PATH_KEYS:  # relative to the file, as in the daemon's config; flags stay relative to the cwd
        if isinstance(data.get(key), str) and data[key] and not Path(data[key]).is_absolute():
            data[key] = str((Path(config).parent / data[key]).resolve())
    given = {k: v for k, v in given.items()
             if v is not None and (k in CalibrationSettings.model_fields or k in THRESHOLD_FLAGS)}
    limit = {THRESHOLD_FLAGS[k]: given.pop(k) for k in list(given) if k in THRESHOLD_FLAGS}
    merged = {**data, **given}
    in_file = {} if data.get("threshold") is None else data["threshold"]  # `threshold:` left empty: defaults
    if limit and isinstance(in_file, dict):  # anything else is refused below, naming the file's key
        merged["threshold"] = {**in_file, **limit}
    flags = {**{(k,): k for k in given}, **{("threshold", v): k for k, v in THRESHOLD_FLAGS.items() if v in limit}}
    try:
        return CalibrationSettings.model_validate(merged)
    except ValidationError as e:  # one line: a bad value before a missing one (a flag not given yet)
        err = next((x for x in e.errors() if x["type"] != "missing"), e.errors()[0])
        loc = tuple(err["loc"])
        if err["type"] == "missing" and loc in {("images",), ("output",)}:
            raise ConfigError(NEEDS_IMAGES) from e
        if loc in flags:
            where = "--" + flags[loc].replace("_", "-")
        else:
            where = ".".join(map(str, loc)) or "(top level)"
            where = f"{config}: {where}" if config else where
        raise ConfigError(f"{where}: {plain_message(err)}") from e
