"""Calibration pipeline: good images -> features -> coreset + threshold -> model version.

Steps (each reported to `progress(stage, done, total)`):
1. read every image in the folder (unreadable ones skipped with a warning);
2. patch features through ONNX Runtime (the same graph the edge daemon runs);
3. the bank: one greedy k-center coreset over every patch (ratio r), as PatchCore builds it;
4. k-fold cross-scoring: split the images into round(1/holdout) folds; every image is scored
   against a bank of the stored bank's size k built without its fold (calibrate/crossval.py:
   a coreset of 2k/(F-1) per fold, k/2 for 5 folds, the other folds' coresets reduced to k by
   a second greedy pass), so each good image gets exactly one held-out score, on the scale a
   new good part gets against the stored bank. Cost grows with points x centres: five fold
   coresets over a fifth of the patches with half the centres cost ~0.5x the main one. The fold coresets'
   union is not the stored bank: measured, it scored worse than one coreset over everything
   (tire image AUROC 0.66-0.68 vs 0.69-0.76 over 4 seeds; a good bottle above the 1% threshold);
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

from edge.backbone import NORMALIZATIONS
from edge.backends.ort_backend import OrtBackend
from edge.calibration_child import CORESET, FEATURES, HOLDOUT
from edge.errors import ConfigError, ImageError
from edge.extract import extract_features
from edge.files import check_output_folder
from edge.geometry import tiles_side_by_side
from edge.graph_cache import extractor_onnx
from edge.knn import make_search
from edge.modeldir import is_model_root, write_version
from edge.onnx_graph import OPSET
from edge.preprocess import list_images
from edge.scoring import fine_dims, fit_map_scale, score_many

from .coreset import greedy_coreset
from .crossval import cross_scores, fold_size, leave_fold_out_banks
from .settings import CalibrationSettings
from .threshold import (RULE_TEXT, Threshold, against_bad, choose_threshold, fit_manifest, folds_for_holdout, kfold,
                        score_stats)

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunOptions:
    """How one run reads its images and writes its version, beside what it builds: kept out of
    CalibrationSettings so that a `--config` file cannot overwrite a model (force) or leave a
    version inactive; set by the flags --force, --no-activate and --expect-onnx-sha256 (the
    daemon's recalibration), or in code (tests, benchmarks)."""

    force: bool = False  # add a version to an existing model directory
    activate: bool = True  # False: write the version but leave CURRENT (the daemon validates first)
    image_paths: list[Path] | None = None  # explicit files instead of listing settings.images
    expect_onnx_sha256: str | None = None  # a cached graph must have this hash (edge/graph_cache.py)
    extra_manifest: dict = field(default_factory=dict)


def _check_paths(s: CalibrationSettings, force: bool) -> None:
    """What the run needs on disk now: a known-bad folder, and an output it may write (a file
    there, or under it, failed only at the write, after the whole run). A missing weights file
    is the graph cache's to refuse (edge/graph_cache.py), before any image is read."""
    if s.bad_images is not None and not s.bad_images.is_dir():
        raise ConfigError(f"bad images folder {s.bad_images} does not exist or is not a folder")
    out = s.output
    check_output_folder(out, "--output")
    if out.exists() and not force:
        if is_model_root(out):
            raise ConfigError(f"{out} already holds a model; pass --force to add a new version "
                              "(the old ones stay for rollback) or choose another --output")
        if not out.is_dir() or any(out.iterdir()):
            raise ConfigError(f"{out} exists and is not an empty folder; choose another --output")
    if force and out.is_dir() and not is_model_root(out) and list_images(out):
        # --force adds a version to a model directory; an image folder given as --output (the
        # good images' own, say) got CURRENT and versions/ written among its pictures
        raise ConfigError(f"{out} holds images and no model; --force only adds versions to a model directory: "
                          "choose another --output")


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


# Below this many good images the threshold's estimate is rough enough to warn about: measured,
# 60 images per category rejected 5.5% of good test parts at a 1% target, 209-320 images 0%.
FEW_GOOD = 100


def leave_fold_out_coresets(folds: list[np.ndarray], patches, per_image: int, bank_size: int,
                            cfg: CalibrationSettings, progress: Progress | None) -> list[np.ndarray]:
    """Leave-fold-out banks (calibrate/crossval.py): a coreset of 2k/(F-1) per fold (seed + 1 +
    fold number), then each fold's complement reduced to the bank's size k; reported as one
    HOLDOUT stage."""
    sizes = [min(fold_size(bank_size, len(folds)), len(f) * per_image) for f in folds]
    total, cores, done = sum(sizes), [], 0
    for i, (f, k) in enumerate(zip(folds, sizes)):
        p = patches(f)
        cb = (lambda d, _t, base=done: progress(HOLDOUT, base + d, total)) if progress else None
        cores.append(p[greedy_coreset(p, k, cfg.projection_dim, cfg.seed + 1 + i, progress=progress is None,
                                      callback=cb)])
        done += k
    return leave_fold_out_banks(cores, bank_size, cfg.projection_dim, cfg.seed)


def _span(sizes) -> str:
    """'1000', or '6272-9408' where the banks differ (folds too small to fill one)."""
    sizes = list(sizes)
    return f"{min(sizes)}" if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"


def _map_fine(cfg, info, d: int, folds: list[np.ndarray], fold_banks: list[np.ndarray], patches
              ) -> tuple[int, float, float]:
    """(dims, weight, scale) of the map's fine-stage term (edge/scoring.py map_scores): the scale
    from up to 20,000 patches of the first fold scored against its leave-fold-out bank, so
    that good patches' map scores have the distance's units (the heatmap colours stay right)."""
    dims = fine_dims(list(info.channels), d)
    if not cfg.map_fine_weight or not dims:
        return 0, 0.0, 1.0
    held = patches(folds[0])
    rng = np.random.default_rng(cfg.seed)
    sample = held[np.sort(rng.choice(len(held), size=min(len(held), 20_000), replace=False))]
    bank = fold_banks[0]  # fold 0's leave-fold-out bank: these patches are not in it
    scale = fit_map_scale(sample, bank, dims, cfg.map_fine_weight, make_search(bank, len(sample)))
    return dims, float(cfg.map_fine_weight), round(scale, 6)


def _bad_scores(folder: Path, backend, geo, mean, std, bank: np.ndarray, top_k: int) -> np.ndarray:
    """Image scores of the known-bad images against the final bank (as inspection scores them)."""
    paths = list_images(folder)
    if not paths:
        raise ImageError(f"no image files in the bad images folder {folder}")
    feats, kept, _ = extract_features(backend, paths, geo, mean, std, progress=False)
    if not len(kept):
        raise ImageError(f"none of the {len(paths)} images in {folder} could be read")
    feats = tiles_side_by_side(feats, geo.tiles)
    scores, _ = score_many(feats, make_search(bank, feats.shape[0] * feats.shape[2] * feats.shape[3]), top_k=top_k)
    return scores


def calibrate(cfg: CalibrationSettings, progress: Progress | None = None,
              run: RunOptions | None = None) -> CalibrationResult:
    """Run the whole calibration and write a new model version; returns what it did."""
    run = run or RunOptions()
    _check_paths(cfg, run.force)
    weights = str(cfg.weights) if cfg.weights else None
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    paths = run.image_paths if run.image_paths is not None else list_images(cfg.images)
    if not paths:
        raise ImageError(f"no image files (png, jpg, bmp, tiff) in {cfg.images}; point --images at the good samples")

    geo = cfg.geometry(paths)
    t = time.perf_counter()
    onnx_bytes, info = extractor_onnx(cfg.backbone, weights, geo.size, cfg.feature_dim, cfg.layers,
                                      expect_sha256=run.expect_onnx_sha256)
    backend = OrtBackend(onnx_bytes)
    mean, std = (info.mean, info.std) if cfg.normalization == "backbone" else NORMALIZATIONS[cfg.normalization]
    timings["backbone"] = time.perf_counter() - t

    t = time.perf_counter()
    cb = (lambda done, total: progress(FEATURES, done, total)) if progress else None
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
    if cfg.score_top_k > gh * gw:  # load_model would refuse the version this run writes
        raise ConfigError(f"--score-top-k {cfg.score_top_k} is more than the {gh * gw} patches of an image at this "
                          f"input size; choose at most {gh * gw}")
    if n < 2:
        raise ImageError(f"only {n} readable image in {cfg.images}; calibration needs at least 2 good images")

    def patches(idx: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(feats[idx].transpose(0, 2, 3, 1).reshape(-1, d))

    t = time.perf_counter()
    # The floor keeps small sets (a few dozen images) from getting a starved bank.
    ratio = min(1.0, max(cfg.coreset_ratio, cfg.min_bank / (n * gh * gw)))
    everything = patches(np.arange(n))
    k = max(1, int(round(len(everything) * ratio)))
    cb = (lambda done, total: progress(CORESET, done, total)) if progress else None
    bank = everything[greedy_coreset(everything, k, cfg.projection_dim, cfg.seed, progress=progress is None,
                                     callback=cb)]
    del everything
    folds = kfold(n, folds_for_holdout(cfg.holdout), cfg.seed)
    fold_banks = leave_fold_out_coresets(folds, patches, gh * gw, len(bank), cfg, progress)
    timings["coreset"] = time.perf_counter() - t

    t = time.perf_counter()
    good_scores = cross_scores(feats, folds, fold_banks, cfg.score_top_k)
    map_fine = _map_fine(cfg, info, d, folds, fold_banks, patches)
    rule = choose_threshold(good_scores, cfg.threshold.rule, cfg.threshold.target_false_reject)
    if n < FEW_GOOD:
        log.warning("only %d good images: the threshold's false-reject estimate is rough (with 60 a 1%% target "
                    "rejected 5.5%% of good test parts, README Operating point); add good images, or check the "
                    "rates with evaluate", n)
    threshold, bad_report = rule.value, None
    if cfg.bad_images is not None:
        bad = _bad_scores(cfg.bad_images, backend, geo, mean, std, bank, cfg.score_top_k)
        threshold, bad_report = against_bad(rule, bad, cfg.threshold.reject_all_bad, cfg.threshold.max_false_reject)
    timings["threshold"] = time.perf_counter() - t

    t = time.perf_counter()
    manifest = {
        "backbone": {
            "name": info.name, "timm_name": info.timm_name, "layers": list(info.layers),
            "channels": list(info.channels), "strides": list(cfg.layers), "weights_sha256": info.weights_sha256,
            "weights_source": info.weights_source, "weights_path": weights,
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
                    "cross_scoring": f"{len(folds)} folds, each scored by a coreset of the other folds' "
                                     f"coresets ({_span(len(b) for b in fold_banks)} vectors)"},
        "threshold": float(threshold),
        "threshold_rule": RULE_TEXT[rule.rule],
        "threshold_fit": fit_manifest(rule, good_scores, len(folds), bad_report),
        "score_stats": score_stats(good_scores),
        "score_top_k": cfg.score_top_k,
        # the map's fine-stage term (edge/scoring.py map_scores): dims of the shallower stages only
        "map_fine": list(map_fine),
        "scoring": {"patch": "L2 to nearest coreset vector",
                    "image": "max" if cfg.score_top_k == 1 else f"mean of the top {cfg.score_top_k} patches",
                    "map_sigma": 4.0},
        "training": {"images": int(n), "held_out": int(n), "folds": len(folds), "patches": int(n * gh * gw),
                     "source": str(cfg.images), "skipped": len(skipped)},
        **run.extra_manifest,
    }
    vdir = write_version(cfg.output, manifest, bank, onnx_bytes, keep=cfg.keep_versions, activate=run.activate)
    timings["write"] = time.perf_counter() - t
    return CalibrationResult(vdir, n, n * gh * gw, len(bank), float(threshold), time.perf_counter() - t0,
                             timings, skipped, good_scores, rule, bad_report)
