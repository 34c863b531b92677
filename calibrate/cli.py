"""`patchcore-edge calibrate`: build a model directory from good images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from edge.calibration_child import JSON_PROGRESS, NO_ACTIVATE, progress_line, result_line

from .build import RunOptions, calibrate
from .settings import load_settings
from .threshold import DEFAULT_MAX_FALSE_REJECT, DEFAULT_TARGET, RULES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="build a PatchCore model from good images",
                       description="Learn 'good' from defect-free images and write a versioned model directory.")
    p.add_argument("--config", type=Path, help="YAML file with any of the options below (configs/calibrate.yaml)")
    p.add_argument("--images", type=Path, help="folder of good images (png, jpg, bmp, ...)")
    p.add_argument("--output", type=Path, help="model directory to create (or add a version to, with --force)")
    p.add_argument("--backbone", help="efficientnet_lite0 (default, embedded) or a timm name, e.g. resnet18")
    p.add_argument("--weights", type=Path, help="local weights file (.safetensors or .pth state dict)")
    p.add_argument("--input-size", help="network input: 224 (square), 256x192 (W x H) or short:224 (short side, "
                   "the images' median aspect; sides rounded to 16 px); default: the backbone's preset")
    p.add_argument("--tiles", help="cut each image into COLSxROWS overlapping tiles, each scored at the input size "
                   "(small defects on large frames; cost: one network input per tile); default 1x1")
    p.add_argument("--tile-overlap", type=float, help="fraction of a tile shared with its neighbour (default 0.1)")
    p.add_argument("--tile-merge", choices=("max", "mean"), help="anomaly map where tiles overlap (default max)")
    p.add_argument("--coreset-ratio", type=float,
                   help="fraction of patches kept (default: 0.001 with a 1,000-vector floor for Lite0, else 0.01)")
    p.add_argument("--preset", help="named settings: 'accurate' (Lite0 0.25%% bank: higher image AUROC, ~2x the "
                   "kNN time) or 'fast' (the former stride 4+8, 192 px preset: ~half the frame time, weaker on "
                   "textured parts); explicit options override it")
    p.add_argument("--layers", help="feature stages by stride, e.g. 8,16 (the paper's) or 4,8,16 (finer textures, "
                   "bigger grid); default: the backbone's preset")
    p.add_argument("--min-bank", type=int, help="floor on the bank size in vectors, for sets of a few dozen images "
                   "(default: the backbone's preset)")
    p.add_argument("--score-top-k", type=int, help="image score = mean of the K highest patch scores; 1 is "
                   "PatchCore's max (default: the preset's, 5 for Lite0, where it measured higher image AUROC)")
    p.add_argument("--map-fine-weight", type=float, help="anomaly map = distance + W x the shallower stages' "
                   "distance to the matched bank vector; sharper maps (default: the preset's, 1 for Lite0; 0: off)")
    p.add_argument("--projection-dim", type=int, help="random projection dims for the coreset (default 128)")
    p.add_argument("--feature-dim", type=int, help="average patch features down to this many dims (default: the "
                   "preset's, 96 for Lite0; 4096 keeps all)")
    p.add_argument("--holdout", type=float, help="fraction of images held out for the threshold (default 0.2)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--threshold-rule", choices=RULES,
                   help="'target': a false-reject rate on good parts (default); 'max3sigma': the former rule")
    p.add_argument("--target-false-reject", type=float,
                   help=f"share of good parts the threshold may reject (default {DEFAULT_TARGET:g})")
    p.add_argument("--bad-images", type=Path, help="folder of known-bad images: report how many the threshold "
                   "would pass")
    p.add_argument("--reject-all-bad", action="store_true", default=None,
                   help="lower the threshold until every --bad-images image fails, within --max-false-reject")
    p.add_argument("--max-false-reject", type=float,
                   help=f"false-reject budget for --reject-all-bad (default {DEFAULT_MAX_FALSE_REJECT:g})")
    p.add_argument("--force", action="store_true", help="add a new version to an existing model directory")
    p.add_argument("--keep-versions", type=int, help="model versions kept for rollback (default 5)")
    p.add_argument("--expect-onnx-sha256", help="use a cached backbone graph only if it has this sha256, "
                   "else rebuild it from the weights (the daemon's recalibration passes the model's own)")
    p.add_argument(NO_ACTIVATE, action="store_true",
                   help="write the new version but keep the current one active (for validation first)")
    p.add_argument(JSON_PROGRESS, action="store_true",
                   help="print progress and the result as JSON lines (for the daemon's recalibration)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    s = load_settings(args.config, **vars(args))
    opts = RunOptions(force=args.force, activate=not args.no_activate, expect_onnx_sha256=args.expect_onnx_sha256)
    progress = None
    if args.json_progress:
        def progress(stage: str, done: int, total: int) -> None:
            print(progress_line(stage, done, total), flush=True)
    # log lines (a skipped image) go above the progress bars, not onto the end of a bar's line
    with logging_redirect_tqdm():
        r = calibrate(s, progress, opts)
    if args.json_progress:
        print(result_line(r.version_dir, threshold=r.threshold, estimated_false_reject=r.rule.estimated_false_reject,
                          bad_images=r.bad, coreset_size=r.coreset_size, images=r.n_images, seconds=r.seconds),
              flush=True)
        return 0
    t = r.timings
    print(f"model      {r.version_dir}", file=sys.stdout)
    print(f"images     {r.n_images} ({len(r.skipped)} skipped)")
    print(f"patches    {r.n_patches}")
    print(f"coreset    {r.coreset_size} x {_dim(r)}")
    print(f"threshold  {r.threshold:.4f} ({describe_rule(r)})")
    if r.bad:
        print(f"bad images {describe_bad(r.bad)}")
    print(f"time       {r.seconds:.1f} s (backbone {t['backbone']:.1f}, features {t['features']:.1f}, "
          f"coreset {t['coreset']:.1f}, threshold {t['threshold']:.1f}, write {t['write']:.2f})")
    return 0


def _dim(r) -> int:
    return json.loads((r.version_dir / "manifest.json").read_text())["feature_dim"]


def describe_rule(r) -> str:
    """One line on what the threshold means, for the operator."""
    rule = r.rule
    what = (f"target {rule.target:.1%} false rejects, {rule.method}" if rule.rule == "target"
            else "max3sigma rule: max(max, mean + 3 std)")
    return (f"{what} over {len(r.good_scores)} cross-scored good images; "
            f"estimated false rejects {rule.estimated_false_reject:.2%}")


def describe_bad(b: dict) -> str:
    line = (f"{b['escapes']} of {b['n']} would pass the fitted threshold {b['fitted_threshold']:.4f} "
            f"(escape rate {b['escape_rate']:.1%})")
    if b["moved"]:
        line += (f"; moved to {b['threshold']:.4f} so all fail, estimated false rejects "
                 f"{b['estimated_false_reject']:.2%}")
    return line
