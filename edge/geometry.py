"""What the network sees of a frame: its input W x H and, optionally, overlapping tiles.

- Input size: any W x H with both sides multiples of 16 (the deepest stage's stride, so
  the feature grid covers the input exactly) in [32, 1024]; a square is the old single
  number. `short:N` keeps the images' aspect: the short side is N, the long side follows
  the median aspect of the calibration images, rounded to 16 (resolved once, at calibration;
  the manifest records the concrete W x H).
- Tiling (`cols x rows`, overlap fraction): the frame (after the ROI crop) is resized to a
  canvas of cols x rows network inputs that overlap by `overlap` of a tile, and cut into
  tiles of exactly the network size, scored as one batch. Working on a canvas in integer
  network pixels means one resize per frame and tiles that are identical for calibration
  and inspection whatever the camera's resolution. The tiles' patch maps are upsampled to
  the tile size and merged on the canvas (max, or mean where tiles overlap), then blurred
  once; the image score is the max patch score over all tiles.

Manifest: `input_size` is an int (square, as older models wrote it) or [width, height];
`tiling` is null or {"tiles": [cols, rows], "overlap": f, "merge": "max"|"mean", "canvas":
[width, height]}; `grid` stays the feature grid of one network input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ModelError

SIDE_MULTIPLE = 16
SIDE_RANGE = (32, 1024)
MAX_TILES_PER_AXIS = 8
MERGES = ("max", "mean")

_WXH = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
_SHORT = re.compile(r"^\s*short\s*:\s*(\d+)\s*$")


def _check_side(value: int, what: str) -> int:
    lo, hi = SIDE_RANGE
    if not lo <= value <= hi or value % SIDE_MULTIPLE:
        raise ConfigError(f"input {what} must be a multiple of {SIDE_MULTIPLE} in [{lo}, {hi}], got {value}")
    return value


@dataclass(frozen=True)
class ShortSide:
    """`short:N`: W x H chosen at calibration from the images' median aspect."""

    short: int

    def __str__(self) -> str:
        return f"short:{self.short}"


def parse_input_size(value: Any) -> tuple[int, int] | ShortSide:
    """224, "224", "256x192" (W x H), [256, 192] or "short:224" -> (W, H) or ShortSide.

    ConfigError names the accepted forms."""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int):
        return _check_side(value, "size"), _check_side(value, "size")
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return _check_side(int(value[0]), "width"), _check_side(int(value[1]), "height")
    text = str(value).strip()
    if text.isdigit():
        return parse_input_size(int(text))
    if m := _WXH.match(text):
        return _check_side(int(m[1]), "width"), _check_side(int(m[2]), "height")
    if m := _SHORT.match(text):
        return ShortSide(_check_side(int(m[1]), "short side"))
    raise ConfigError(f"input size {value!r} is not understood; use a number (square, e.g. 224), "
                      "WIDTHxHEIGHT (e.g. 256x192) or short:N (e.g. short:224, keeps the images' aspect)")


def parse_tiles(value: Any) -> tuple[int, int]:
    """"2x2" (cols x rows), [2, 2] or a single number n (n x n) -> (cols, rows)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        cols, rows = value
    elif m := _WXH.match(str(value)):
        cols, rows = int(m[1]), int(m[2])
    elif str(value).strip().isdigit():
        cols = rows = int(str(value).strip())
    else:
        raise ConfigError(f"tiles {value!r} is not understood; use COLSxROWS, e.g. 2x2 (1x1: no tiling)")
    if not all(isinstance(v, int) and 1 <= v <= MAX_TILES_PER_AXIS for v in (cols, rows)):
        raise ConfigError(f"tiles must be 1..{MAX_TILES_PER_AXIS} per axis, got {value!r}")
    return int(cols), int(rows)


def check_overlap(overlap: float) -> float:
    if not 0.0 <= overlap < 0.5:
        raise ConfigError(f"tile overlap is a fraction of a tile in [0, 0.5), got {overlap}")
    return float(overlap)


def _span(n: int, overlap: float) -> float:
    """Canvas length in tile lengths for n tiles overlapping by `overlap`."""
    return n - (n - 1) * overlap


def median_aspect(paths: list[Path], sample: int = 64) -> float:
    """Median width / height over (up to `sample`, evenly spread) images; reads headers only."""
    from PIL import Image

    step = max(1, len(paths) // sample)
    aspects = []
    for p in paths[::step]:
        try:
            with Image.open(p) as im:
                w, h = im.size
        except Exception:  # unreadable files are reported (and skipped) by feature extraction
            continue
        if w > 0 and h > 0:
            aspects.append(w / h)
    if not aspects:
        raise ConfigError("short:N input size needs readable images to measure their aspect")
    return float(np.median(aspects))


def resolve_short_side(short: int, image_aspect: float, tiles: tuple[int, int] = (1, 1),
                       overlap: float = 0.0) -> tuple[int, int]:
    """(W, H) with short side `short` and the aspect of one tile of an image of this aspect."""
    aspect = image_aspect * _span(tiles[1], overlap) / _span(tiles[0], overlap)
    long = max(SIDE_MULTIPLE, round(short * max(aspect, 1 / aspect) / SIDE_MULTIPLE) * SIDE_MULTIPLE)
    if long > SIDE_RANGE[1]:
        raise ConfigError(f"short:{short} on images of aspect {image_aspect:.2f} gives a long side of {long} px "
                          f"(> {SIDE_RANGE[1]}); use a smaller short side or --tiles along the long axis")
    w, h = (long, short) if aspect >= 1 else (short, long)
    return _check_side(w, "width"), _check_side(h, "height")


@dataclass(frozen=True)
class Geometry:
    """Network input W x H and the tile layout of the canvas (1 x 1: no tiling)."""

    width: int
    height: int
    cols: int = 1
    rows: int = 1
    overlap: float = 0.0
    merge: str = "max"

    def __post_init__(self) -> None:
        if self.merge not in MERGES:
            raise ConfigError(f"tile merge must be one of {', '.join(MERGES)}, got {self.merge!r}")

    @property
    def size(self) -> tuple[int, int]:
        """Network input (W, H)."""
        return self.width, self.height

    @property
    def tiles(self) -> int:
        return self.cols * self.rows

    @property
    def tiled(self) -> bool:
        return self.tiles > 1

    @property
    def step(self) -> tuple[int, int]:
        """Distance between tile origins on the canvas (x, y), in network pixels."""
        return round(self.width * (1.0 - self.overlap)), round(self.height * (1.0 - self.overlap))

    @property
    def canvas(self) -> tuple[int, int]:
        """(W, H) the frame is resized to; the anomaly map has this size."""
        sx, sy = self.step
        return self.width + (self.cols - 1) * sx, self.height + (self.rows - 1) * sy

    def origins(self) -> list[tuple[int, int]]:
        """Top-left (x, y) of each tile on the canvas, row by row."""
        sx, sy = self.step
        return [(c * sx, r * sy) for r in range(self.rows) for c in range(self.cols)]

    # -- frames -> network inputs ----------------------------------------------------
    def inputs(self, bgr: np.ndarray, mean, std) -> np.ndarray:
        """BGR uint8 frame of any size -> (tiles, 3, H, W) normalised network inputs."""
        from .preprocess import normalise, resize_to

        canvas = normalise(resize_to(bgr, self.canvas), mean, std)
        if not self.tiled:
            return canvas[None]
        w, h = self.size
        return np.stack([canvas[:, y:y + h, x:x + w] for x, y in self.origins()])

    # -- per-tile scores -> per-frame results ----------------------------------------
    def image_scores(self, tile_scores: np.ndarray) -> np.ndarray:
        """(B * tiles,) tile scores -> (B,) image scores: the max over each frame's tiles."""
        return np.asarray(tile_scores).reshape(-1, self.tiles).max(axis=1)

    def anomaly_map(self, patch_scores: np.ndarray) -> np.ndarray:
        """(tiles, h, w) or (h, w) patch scores of one frame -> (canvas H, canvas W) map, blurred."""
        import cv2

        from .scoring import anomaly_map, blur

        ps = np.asarray(patch_scores, dtype=np.float32)
        if not self.tiled:
            return anomaly_map(ps.reshape(ps.shape[-2:]), self.size)
        w, h = self.size
        cw, ch = self.canvas
        acc = np.zeros((ch, cw), np.float32)
        count = np.zeros((ch, cw), np.float32) if self.merge == "mean" else None
        for (x, y), tile in zip(self.origins(), ps.reshape(self.tiles, *ps.shape[-2:])):
            up = cv2.resize(tile, (w, h), interpolation=cv2.INTER_LINEAR)
            region = acc[y:y + h, x:x + w]
            if count is None:
                np.maximum(region, up, out=region)  # scores are distances >= 0, so 0 is neutral
            else:
                region += up
                count[y:y + h, x:x + w] += 1.0
        if count is not None:
            acc /= count
        return blur(acc)

    # -- manifest / CLI ----------------------------------------------------------------
    def manifest_fields(self) -> dict[str, Any]:
        size: int | list[int] = self.width if self.width == self.height else [self.width, self.height]
        tiling = None
        if self.tiled:
            tiling = {"tiles": [self.cols, self.rows], "overlap": self.overlap, "merge": self.merge,
                      "canvas": list(self.canvas)}
        return {"input_size": size, "tiling": tiling}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Geometry:
        try:
            w, h = parse_input_size(manifest["input_size"])  # type: ignore[misc]
            t = manifest.get("tiling") or {}
            cols, rows = parse_tiles(t.get("tiles", [1, 1]))
            return cls(w, h, cols, rows, check_overlap(float(t.get("overlap", 0.0))), t.get("merge", "max"))
        except (ConfigError, TypeError, ValueError) as e:
            raise ModelError(f"manifest input_size/tiling unreadable ({e}); recalibrate") from e

    def cli_args(self) -> list[str]:
        """The calibrate options that reproduce this geometry (for recalibration)."""
        args = ["--input-size", str(self.width) if self.width == self.height else f"{self.width}x{self.height}"]
        if self.tiled:
            args += ["--tiles", f"{self.cols}x{self.rows}", "--tile-overlap", f"{self.overlap:g}",
                     "--tile-merge", self.merge]
        return args

    def describe(self) -> str:
        text = f"{self.width}x{self.height}"
        if self.tiled:
            text += f", tiles {self.cols}x{self.rows} overlap {self.overlap:g} ({self.merge})"
        return text


def as_geometry(value: Geometry | int | tuple[int, int]) -> Geometry:
    """A Geometry, or a square size / (W, H) without tiling (older call sites)."""
    if isinstance(value, Geometry):
        return value
    if isinstance(value, int):
        return Geometry(value, value)
    w, h = value
    return Geometry(int(w), int(h))


def tiles_side_by_side(features: np.ndarray, tiles: int) -> np.ndarray:
    """(B * tiles, D, h, w) -> (B, D, h, tiles * w): each image's tiles in one row.

    Not a spatial map: it lets code that works per image (bank building, held-out image
    scores = max over all of an image's patches) treat a tiled image like any other."""
    if tiles == 1:
        return features
    bt, d, h, w = features.shape
    return np.ascontiguousarray(
        features.reshape(bt // tiles, tiles, d, h, w).transpose(0, 2, 3, 1, 4).reshape(bt // tiles, d, h, tiles * w))
