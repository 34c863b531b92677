"""Calibration pipeline: good images -> features -> coreset + threshold -> model version.

Steps (each reported to `progress(stage, done, total)`):
1. read every image in the folder (unreadable ones skipped with a warning);
2. patch features through ONNX Runtime (the same graph the edge daemon runs);
3. split off HOLDOUT of the images; coreset A from the rest (ratio r); score the held-out
   images against A -> threshold (calibrate/threshold.py);
4. coreset B from the held-out images' patches (ratio r); the stored bank is A + B. Greedy
   k-center coresets compose: the union covers every patch within the larger of the two
   covering radii, and it costs ~0.68x one coreset over all patches instead of 1.64x for
   "one for the threshold plus one over everything" (cost grows with points x centres);
5. write a new version of the model directory atomically and make it current.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.backbone import DEFAULT_BACKBONE, preset
from edge.backends.ort_backend import OrtBackend
from edge.errors import ConfigError, ImageError
from edge.extract import extract_features
from edge.graph_cache import extractor_onnx
from edge.knn import make_search
from edge.modeldir import is_model_root, write_version
from edge.onnx_graph import OPSET
from edge.preprocess import list_images
from edge.scoring import score_many

from .coreset import greedy_coreset
from .threshold import SIGMAS, score_stats, split_holdout, threshold_from_good

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class CalibrationConfig:
    """What a calibration needs; validated in `validate()` with messages that name the fix."""

    images: Path
    output: Path
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    input_size: int | None = None  # None: the backbone's preset (edge.backbone.PRESETS)
    coreset_ratio: float | None = None
    strides: tuple[int, int] | None = None
    projection_dim: int = 128
    feature_dim: int | None = None
    holdout: float = 0.2
    seed: int = 0
    force: bool = False
    keep_versions: int = 5
    activate: bool = True  # False: write the version but leave CURRENT (the daemon validates first)
    image_paths: list[Path] | None = None  # explicit files instead of a folder listing
    extra_manifest: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Fill preset defaults, then check every value."""
        p = preset(self.backbone)
        self.input_size = p.input_size if self.input_size is None else self.input_size
        self.coreset_ratio = p.coreset_ratio if self.coreset_ratio is None else self.coreset_ratio
        self.strides = p.strides if self.strides is None else tuple(self.strides)
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ConfigError(f"coreset ratio must be in (0, 1], got {self.coreset_ratio}; "
                              f"{p.coreset_ratio} is the default for {self.backbone}")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"holdout fraction must be in (0, 1), got {self.holdout}")
        if not 32 <= self.input_size <= 1024 or self.input_size % 16:
            raise ConfigError(f"input size must be a multiple of 16 in [32, 1024], got {self.input_size}")
        if self.projection_dim < 1:
            raise ConfigError(f"projection dim must be >= 1, got {self.projection_dim}")
        out = Path(self.output)
        if out.exists() and not self.force:
            if is_model_root(out):
                raise ConfigError(f"{out} already holds a model; pass --force to add a new version "
                                  "(the old ones stay for rollback) or choose another --output")
            if not out.is_dir() or any(out.iterdir()):
                raise ConfigError(f"{out} exists and is not an empty folder; choose another --output")


@dataclass
class CalibrationResult:
    version_dir: Path
    n_images: int
    n_patches: int
    coreset_size: int
    threshold: float
    seconds: float
    timings: dict[str, float]
    skipped: list[str]


def _coreset(patches: np.ndarray, ratio: float, cfg: CalibrationConfig, seed: int, progress: Progress | None,
             stage: str) -> np.ndarray:
    k = max(1, int(round(len(patches) * ratio)))
    cb = (lambda done, total: progress(stage, done, total)) if progress else None
    return greedy_coreset(patches, k, cfg.projection_dim, seed, progress=progress is None, callback=cb)


def calibrate(cfg: CalibrationConfig, progress: Progress | None = None) -> CalibrationResult:
    """Run the whole calibration and write a new model version; returns what it did."""
    cfg.validate()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    paths = cfg.image_paths if cfg.image_paths is not None else list_images(cfg.images)
    if not paths:
        raise ImageError(f"no image files (png, jpg, bmp, tiff) in {cfg.images}; point --images at the good samples")

    t = time.perf_counter()
    onnx_bytes, info = extractor_onnx(cfg.backbone, cfg.weights, cfg.input_size, cfg.feature_dim, cfg.strides)
    backend = OrtBackend(onnx_bytes)
    timings["backbone"] = time.perf_counter() - t

    t = time.perf_counter()
    cb = (lambda done, total: progress("features", done, total)) if progress else None
    feats, kept, shapes = extract_features(backend, paths, cfg.input_size, info.mean, info.std,
                                           progress=progress is None, callback=cb)
    timings["features"] = time.perf_counter() - t
    skipped = [str(p) for p in paths if p not in set(kept)]
    small = sum(1 for h, w in shapes if min(h, w) < cfg.input_size)
    if small:
        log.warning("%d image(s) are smaller than the %d px input and were upscaled; detail may be lost",
                    small, cfg.input_size)
    n, d, gh, gw = feats.shape
    if n < 2:
        raise ImageError(f"only {n} readable image in {cfg.images}; calibration needs at least 2 good images")

    def patches(idx: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(feats[idx].transpose(0, 2, 3, 1).reshape(-1, d))

    t = time.perf_counter()
    train_idx, held_idx = split_holdout(n, cfg.holdout, cfg.seed)
    train_patches = patches(train_idx)
    sel_a = _coreset(train_patches, cfg.coreset_ratio, cfg, cfg.seed, progress, "coreset")
    bank_a = train_patches[sel_a]
    timings["coreset"] = time.perf_counter() - t

    t = time.perf_counter()
    held = feats[held_idx]
    held_scores, _ = score_many(held, make_search(bank_a, held.shape[0] * gh * gw))
    threshold = threshold_from_good(held_scores)
    timings["threshold"] = time.perf_counter() - t

    t = time.perf_counter()
    held_patches = patches(held_idx)
    sel_b = _coreset(held_patches, cfg.coreset_ratio, cfg, cfg.seed + 1, progress, "coreset-holdout")
    bank = np.concatenate([bank_a, held_patches[sel_b]])
    timings["coreset"] += time.perf_counter() - t

    t = time.perf_counter()
    manifest = {
        "backbone": {
            "name": info.name, "timm_name": info.timm_name, "layers": list(info.layers),
            "channels": list(info.channels), "strides": list(cfg.strides), "weights_sha256": info.weights_sha256,
            "weights_source": info.weights_source, "weights_path": cfg.weights,
        },
        "input_size": cfg.input_size,
        "normalization": {"mean": list(info.mean), "std": list(info.std), "color": "RGB"},
        "grid": [gh, gw],
        "feature_dim_request": cfg.feature_dim,
        "onnx": {"opset": OPSET, "input": "images", "output": "patch_features"},
        "coreset": {"ratio": cfg.coreset_ratio, "projection_dim": cfg.projection_dim, "seed": cfg.seed,
                    "method": "greedy k-center on train split + on held-out split (union)"},
        "threshold": float(threshold),
        "threshold_rule": f"max(max held-out score, mean + {SIGMAS:g} std) over held-out good images",
        "score_stats": score_stats(held_scores),
        "scoring": {"patch": "L2 to nearest coreset vector", "image": "max", "map_sigma": 4.0},
        "training": {"images": int(n), "held_out": int(len(held_idx)), "patches": int(n * gh * gw),
                     "source": str(cfg.images), "skipped": len(skipped)},
        **cfg.extra_manifest,
    }
    vdir = write_version(cfg.output, manifest, bank, onnx_bytes, keep=cfg.keep_versions, activate=cfg.activate)
    timings["write"] = time.perf_counter() - t
    return CalibrationResult(vdir, n, n * gh * gw, len(bank), float(threshold), time.perf_counter() - t0,
                             timings, skipped)
