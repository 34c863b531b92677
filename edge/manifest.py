"""The model version's manifest as a typed record, validated once when a version is loaded.

Writers (calibrate/build.py, edge/retune.py) still assemble the JSON as a dict; every reader
goes through `Manifest` (via `Model.spec`), so a field name or type is spelled here and a
malformed manifest is refused at load with one line instead of failing later on a frame.
Unknown keys are kept (threshold_fit, training, threshold_change, ...): they are reports for
people, not inputs to inspection. Input size and tiling are parsed by edge/geometry.py.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ModelError


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)


class BackboneSpec(_Open):
    name: str = Field(min_length=1)
    strides: tuple[int, ...] = Field(min_length=1)
    weights_path: str | None = None
    weights_sha256: str | None = None


class Normalization(_Open):
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class Manifest(_Open):
    format_version: int
    version: str
    backbone: BackboneSpec
    input_size: int | tuple[int, int]
    normalization: Normalization
    grid: tuple[int, int]
    feature_dim: int = Field(gt=0)
    feature_dim_request: int | None = None
    coreset_size: int = Field(gt=0)
    threshold: float = Field(gt=0)
    files: dict[str, str]
    # image score = mean of the top k patch scores (edge/scoring.py); manifests before it: the max
    score_top_k: int = Field(1, ge=1, le=100_000)
    # anomaly map = scale x (distance + weight x the leading `dims` dims' distance to the same
    # neighbour) (edge/scoring.py map_scores); manifests before it: the distance alone
    map_fine: tuple[int, float, float] = (0, 0.0, 1.0)

    @field_validator("map_fine")
    @classmethod
    def _map_fine(cls, v, info):
        dims, weight, scale = v
        if dims < 0 or not 0.0 <= weight <= 100.0 or not 0.0 < scale <= 10.0:
            raise ValueError("map_fine must be [dims >= 0, 0 <= weight <= 100, 0 < scale <= 10]")
        if dims > info.data.get("feature_dim", dims):
            raise ValueError(f"map_fine dims {dims} exceed feature_dim")
        return v


def parse_manifest(data: dict, where: str) -> Manifest:
    """Manifest from the loaded JSON; ModelError names the first bad field."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(map(str, err["loc"])) or "(top level)"
        raise ModelError(f"{where}: manifest field {field}: {err['msg']}; it was not written by this "
                         "patchcore-edge, recalibrate") from e
