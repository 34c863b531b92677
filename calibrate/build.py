"""Calibration pipeline: good images -> features -> coreset + threshold -> model version.

Steps (each reported to `progress(stage, done, total)`):
1. read every image in the folder (unreadable ones skipped with a warning);
2. patch features through ONNX Runtime (the same graph the edge daemon runs);
3. the bank: one greedy k-center coreset over every patch (ratio r), as PatchCore builds it;
4. k-fold cross-scoring: split the images into round(1/holdout) folds, a coreset per fold
   (ratio r); every image is scored against the union of the other folds' coresets, so each
   good image gets exactly one held-out score. Greedy coresets compose (the union covers each
   fold within that fold's covering radius), and cost grows with points x centres, so 5 fold
   coresets over a fifth of the patches each cost ~0.2x the main one: 1.2x in all, where the
   former 80/20 split (its union was the bank) cost 0.68x. The union of the fold coresets is
   not the stored bank: measured, it scored worse than one coreset over everything (tire
   image AUROC 0.66-0.68 vs 0.69-0.76 over 4 seeds; a good bottle above the 1% threshold);
5. threshold from the cross-scores (calibrate/threshold.py: a target false-reject rate via a
   tail fit, or the former max3sigma rule); known-bad images, when given, report the escape
   rate they imply and can pull the threshold down within a false-reject budget;
6. write a new version of the model directory atomically and make it current.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.backbone import DEFAULT_BACKBONE, NAMED_PRESETS, NORMALIZATIONS, parse_strides, preset
from edge.backends.ort_backend import OrtBackend
from edge.errors import ConfigError, ImageError
from edge.extract import extract_features
from edge.geometry import (Geometry, ShortSide, check_overlap, median_aspect, parse_input_size, parse_tiles,
                           resolve_short_side, tiles_side_by_side)
from edge.graph_cache import extractor_onnx
from edge.knn import make_search
from edge.modeldir import is_model_root, write_version
from edge.onnx_graph import OPSET
from edge.preprocess import list_images
from edge.scoring import score_many

from .coreset import greedy_coreset
from .crossval import cross_scores
from .threshold import (DEFAULT_MAX_FALSE_REJECT, DEFAULT_RULE, DEFAULT_TARGET, RULE_TEXT, RULES, Threshold,
                        against_bad, choose_threshold, fit_manifest, folds_for_holdout, kfold, score_stats)

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class CalibrationConfig:
    """What a calibration needs; validated in `validate()` with messages that name the fix."""

    images: Path
    output: Path
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    # S, "WxH", (W, H) or "short:N" (edge/geometry.py); None: the backbone's preset (edge.backbone.PRESETS)
    input_size: int | str | tuple[int, int] | None = None
    tiles: str | tuple[int, int] | None = None  # "COLSxROWS"; None or 1x1: no tiling
    tile_overlap: float = 0.1  # fraction of a tile shared with its neighbour
    tile_merge: str = "max"  # how overlapping tiles' maps combine: max or mean
    coreset_ratio: float | None = None
    strides: tuple[int, ...] | None = None  # feature stages by stride, e.g. (8, 16)
    min_bank: int | None = None  # floor on the bank size (vectors); None: the preset's
    normalization: str | None = None  # 'backbone' or 'imagenet'; None: the preset's
    preset: str | None = None  # a named preset (edge.backbone.NAMED_PRESETS); None: the backbone's
    projection_dim: int = 128
    feature_dim: int | None = None
    holdout: float = 0.2  # each fold's share: round(1 / holdout) folds
    seed: int = 0
    threshold_rule: str = DEFAULT_RULE  # calibrate/threshold.py RULES
    target_false_reject: float = DEFAULT_TARGET  # for the "target" rule
    bad_images: Path | None = None  # known-bad images: report their escape rate at the threshold
    reject_all_bad: bool = False  # ... and lower the threshold until they all fail
    max_false_reject: float = DEFAULT_MAX_FALSE_REJECT  # the budget that move may spend
    force: bool = False
    keep_versions: int = 5
    activate: bool = True  # False: write the version but leave CURRENT (the daemon validates first)
    image_paths: list[Path] | None = None  # explicit files instead of a folder listing
    expect_onnx_sha256: str | None = None  # a cached graph must have this hash (edge/graph_cache.py)
    extra_manifest: dict = field(default_factory=dict)

    def geometry(self, paths: list[Path]) -> Geometry:
        """Network input W x H (short:N resolved on these images' median aspect) and tiling."""
        size = parse_input_size(self.input_size)
        tiles = parse_tiles(self.tiles or (1, 1))
        if isinstance(size, ShortSide):
            size = resolve_short_side(size.short, median_aspect(paths), tiles, self.tile_overlap)
        return Geometry(*size, *tiles, self.tile_overlap, self.tile_merge)

    def validate(self) -> None:
        """Fill preset defaults, then check every value."""
        p = preset(self.backbone)
        if self.preset is not None:
            if self.preset not in NAMED_PRESETS:
                raise ConfigError(f"unknown preset {self.preset!r}; choose one of {sorted(NAMED_PRESETS)} "
                                  "or leave it out for the backbone's default")
            backbone, p = NAMED_PRESETS[self.preset]
            if self.backbone != backbone:
                raise ConfigError(f"preset {self.preset!r} is for backbone {backbone!r}, not {self.backbone!r}")
        self.input_size = p.input_size if self.input_size is None else self.input_size
        self.coreset_ratio = p.coreset_ratio if self.coreset_ratio is None else self.coreset_ratio
        self.feature_dim = p.feature_dim if self.feature_dim is None else self.feature_dim
        self.strides = p.strides if self.strides is None else parse_strides(self.strides)
        self.min_bank = p.min_bank if self.min_bank is None else self.min_bank
        self.normalization = p.normalization if self.normalization is None else self.normalization
        if self.normalization not in ("backbone", *NORMALIZATIONS):
            raise ConfigError(f"normalization must be 'backbone' or one of {sorted(NORMALIZATIONS)}, "
                              f"got {self.normalization!r}")
        if self.min_bank < 0:
            raise ConfigError(f"minimum bank size must be >= 0, got {self.min_bank}")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ConfigError(f"coreset ratio must be in (0, 1], got {self.coreset_ratio}; "
                              f"{p.coreset_ratio} is the default for {self.backbone}")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"holdout fraction must be in (0, 1), got {self.holdout}")
        if self.threshold_rule not in RULES:
            raise ConfigError(f"threshold rule must be one of {', '.join(RULES)}, got {self.threshold_rule!r}")
        for name in ("target_false_reject", "max_false_reject"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise ConfigError(f"{name.replace('_', ' ')} rate must be in (0, 0.5), e.g. 0.01 for 1%, "
                                  f"got {getattr(self, name)}")
        if self.reject_all_bad and self.bad_images is None:
            raise ConfigError("reject-all-bad needs --bad-images DIR (known-bad images to reject)")
        if self.bad_images is not None and not Path(self.bad_images).is_dir():
            raise ConfigError(f"bad images folder {self.bad_images} does not exist or is not a folder")
        parse_input_size(self.input_size)
        Geometry(16, 16, *parse_tiles(self.tiles or (1, 1)), check_overlap(self.tile_overlap), self.tile_merge)
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
    good_scores: np.ndarray | None = None  # every train image's cross-score (k-fold)
    rule: Threshold | None = None  # the rule's fit, before any move for known-bad images
    bad: dict | None = None  # what the known-bad images said (escape rate, move), if given


def _fold_coresets(folds: list[np.ndarray], patches, per_image: int, ratio: float, cfg: CalibrationConfig,
                   progress: Progress | None) -> list[np.ndarray]:
    """One coreset per fold (seed + 1 + fold number), reported as one "coreset-holdout" stage."""
    sizes = [max(1, int(round(len(f) * per_image * ratio))) for f in folds]
    total, banks, done = sum(sizes), [], 0
    for i, (f, k) in enumerate(zip(folds, sizes)):
        p = patches(f)
        cb = (lambda d, _t, base=done: progress("coreset-holdout", base + d, total)) if progress else None
        banks.append(p[greedy_coreset(p, k, cfg.projection_dim, cfg.seed + 1 + i, progress=progress is None,
                                      callback=cb)])
        done += k
    return banks


def _bad_scores(folder: Path, backend, geo, mean, std, bank: np.ndarray) -> np.ndarray:
    """Image scores of the known-bad images against the final bank (as inspection scores them)."""
    paths = list_images(folder)
    if not paths:
        raise ImageError(f"no image files in the bad images folder {folder}")
    feats, kept, _ = extract_features(backend, paths, geo, mean, std, progress=False)
    if not len(kept):
        raise ImageError(f"none of the {len(paths)} images in {folder} could be read")
    feats = tiles_side_by_side(feats, geo.tiles)
    scores, _ = score_many(feats, make_search(bank, feats.shape[0] * feats.shape[2] * feats.shape[3]))
    return scores


def calibrate(cfg: CalibrationConfig, progress: Progress | None = None) -> CalibrationResult:
    """Run the whole calibration and write a new model version; returns what it did."""
    cfg.validate()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    paths = cfg.image_paths if cfg.image_paths is not None else list_images(cfg.images)
    if not paths:
        raise ImageError(f"no image files (png, jpg, bmp, tiff) in {cfg.images}; point --images at the good samples")

    geo = cfg.geometry(paths)
    t = time.perf_counter()
    onnx_bytes, info = extractor_onnx(cfg.backbone, cfg.weights, geo.size, cfg.feature_dim, cfg.strides,
                                      expect_sha256=cfg.expect_onnx_sha256)
    backend = OrtBackend(onnx_bytes)
    mean, std = (info.mean, info.std) if cfg.normalization == "backbone" else NORMALIZATIONS[cfg.normalization]
    timings["backbone"] = time.perf_counter() - t

    t = time.perf_counter()
    cb = (lambda done, total: progress("features", done, total)) if progress else None
    feats, kept, shapes = extract_features(backend, paths, geo, mean, std,
                                           progress=progress is None, callback=cb)
    timings["features"] = time.perf_counter() - t
    skipped = [str(p) for p in paths if p not in set(kept)]
    cw, ch = geo.canvas
    small = sum(1 for h, w in shapes if h < ch or w < cw)
    if small:
        log.warning("%d image(s) are smaller than the %dx%d px input and were upscaled; detail may be lost",
                    small, cw, ch)
    grid = list(feats.shape[-2:])  # one network input's
    # A tiled image's tiles side by side: the bank holds every tile's patches and a held-out
    # image's score is the max over all of them, exactly as inspection scores a frame.
    feats = tiles_side_by_side(feats, geo.tiles)
    n, d, gh, gw = feats.shape
    if n < 2:
        raise ImageError(f"only {n} readable image in {cfg.images}; calibration needs at least 2 good images")

    def patches(idx: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(feats[idx].transpose(0, 2, 3, 1).reshape(-1, d))

    t = time.perf_counter()
    # The floor keeps small sets (a few dozen images) from getting a starved bank.
    ratio = min(1.0, max(cfg.coreset_ratio, cfg.min_bank / (n * gh * gw)))
    everything = patches(np.arange(n))
    k = max(1, int(round(len(everything) * ratio)))
    cb = (lambda done, total: progress("coreset", done, total)) if progress else None
    bank = everything[greedy_coreset(everything, k, cfg.projection_dim, cfg.seed, progress=progress is None,
                                     callback=cb)]
    del everything
    folds = kfold(n, folds_for_holdout(cfg.holdout), cfg.seed)
    fold_banks = _fold_coresets(folds, patches, gh * gw, ratio, cfg, progress)
    timings["coreset"] = time.perf_counter() - t

    t = time.perf_counter()
    good_scores = cross_scores(feats, folds, fold_banks)
    rule = choose_threshold(good_scores, cfg.threshold_rule, cfg.target_false_reject)
    threshold, bad_report = rule.value, None
    if cfg.bad_images is not None:
        bad = _bad_scores(cfg.bad_images, backend, geo, mean, std, bank)
        threshold, bad_report = against_bad(rule, bad, cfg.reject_all_bad, cfg.max_false_reject)
    timings["threshold"] = time.perf_counter() - t

    t = time.perf_counter()
    manifest = {
        "backbone": {
            "name": info.name, "timm_name": info.timm_name, "layers": list(info.layers),
            "channels": list(info.channels), "strides": list(cfg.strides), "weights_sha256": info.weights_sha256,
            "weights_source": info.weights_source, "weights_path": cfg.weights,
        },
        "preset": cfg.preset or "default",
        **geo.manifest_fields(),  # input_size (S or [W, H]) and tiling
        "normalization": {"mean": list(mean), "std": list(std), "color": "RGB", "name": cfg.normalization},
        "grid": grid,
        "feature_dim_request": cfg.feature_dim,
        "onnx": {"opset": OPSET, "input": "images", "output": "patch_features"},
        "coreset": {"ratio": cfg.coreset_ratio, "min_bank": cfg.min_bank, "effective_ratio": ratio,
                    "projection_dim": cfg.projection_dim, "seed": cfg.seed,
                    "method": "greedy k-center over all patches",
                    "cross_scoring": f"{len(folds)} folds, each scored by the union of the others' coresets"},
        "threshold": float(threshold),
        "threshold_rule": RULE_TEXT[rule.rule],
        "threshold_fit": fit_manifest(rule, good_scores, len(folds), bad_report),
        "score_stats": score_stats(good_scores),
        "scoring": {"patch": "L2 to nearest coreset vector", "image": "max", "map_sigma": 4.0},
        "training": {"images": int(n), "held_out": int(n), "folds": len(folds), "patches": int(n * gh * gw),
                     "source": str(cfg.images), "skipped": len(skipped)},
        **cfg.extra_manifest,
    }
    vdir = write_version(cfg.output, manifest, bank, onnx_bytes, keep=cfg.keep_versions, activate=cfg.activate)
    timings["write"] = time.perf_counter() - t
    return CalibrationResult(vdir, n, n * gh * gw, len(bank), float(threshold), time.perf_counter() - t0,
                             timings, skipped, good_scores, rule, bad_report)
