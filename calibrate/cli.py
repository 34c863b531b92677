"""`patchcore-edge calibrate`: build a model directory from good images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.errors import ConfigError

from .build import CalibrationConfig, calibrate
from .settings import CalibrateSettings, load_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="build a PatchCore model from good images",
                       description="Learn 'good' from defect-free images and write a versioned model directory.")
    p.add_argument("--config", type=Path, help="YAML file with any of the options below (configs/calibrate.yaml)")
    p.add_argument("--images", type=Path, help="folder of good images (png, jpg, bmp, ...)")
    p.add_argument("--output", type=Path, help="model directory to create (or add a version to, with --force)")
    p.add_argument("--backbone", help="efficientnet_lite0 (default, embedded) or a timm name, e.g. resnet18")
    p.add_argument("--weights", type=Path, help="local weights file (.safetensors or .pth state dict)")
    p.add_argument("--input-size", type=int, help="square network input in px (default: 192 for Lite0, else 224)")
    p.add_argument("--coreset-ratio", type=float,
                   help="fraction of patches kept (default: 0.0025 for Lite0's stride-4 grid, else 0.01)")
    p.add_argument("--projection-dim", type=int, help="random projection dims for the coreset (default 128)")
    p.add_argument("--feature-dim", type=int, help="reduce patch features to this many dims (default: keep)")
    p.add_argument("--holdout", type=float, help="fraction of images held out for the threshold (default 0.2)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="add a new version to an existing model directory")
    p.add_argument("--no-activate", action="store_true",
                   help="write the new version but keep the current one active (for validation first)")
    p.add_argument("--json-progress", action="store_true",
                   help="print progress and the result as JSON lines (for the daemon's recalibration)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    base = load_settings(args.config) if args.config else CalibrateSettings()
    overrides = {k: v for k, v in vars(args).items()
                 if k in CalibrateSettings.model_fields and v is not None}
    try:
        s = CalibrateSettings.model_validate({**base.model_dump(), **overrides})
    except Exception as e:
        err = e.errors()[0]  # type: ignore[attr-defined]
        raise ConfigError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from e
    if s.images is None or s.output is None:
        raise ConfigError("calibrate needs --images DIR and --output MODEL_DIR (or both in --config)")
    cfg = CalibrationConfig(images=s.images, output=s.output, backbone=s.backbone,
                            weights=str(s.weights) if s.weights else None, input_size=s.input_size,
                            coreset_ratio=s.coreset_ratio, projection_dim=s.projection_dim,
                            feature_dim=s.feature_dim, holdout=s.holdout, seed=s.seed, force=args.force,
                            keep_versions=s.keep_versions, activate=not args.no_activate)
    progress = None
    if args.json_progress:
        def progress(stage: str, done: int, total: int) -> None:
            print(json.dumps({"stage": stage, "done": done, "total": total}), flush=True)
    r = calibrate(cfg, progress)
    if args.json_progress:
        print(json.dumps({"stage": "done", "version_dir": str(r.version_dir), "threshold": r.threshold,
                          "coreset_size": r.coreset_size, "images": r.n_images, "seconds": r.seconds}), flush=True)
        return 0
    t = r.timings
    print(f"model      {r.version_dir}", file=sys.stdout)
    print(f"images     {r.n_images} ({len(r.skipped)} skipped)")
    print(f"patches    {r.n_patches}")
    print(f"coreset    {r.coreset_size} x {_dim(r)}")
    print(f"threshold  {r.threshold:.4f}")
    print(f"time       {r.seconds:.1f} s (backbone {t['backbone']:.1f}, features {t['features']:.1f}, "
          f"coreset {t['coreset']:.1f}, threshold {t['threshold']:.1f}, write {t['write']:.2f})")
    return 0


def _dim(r) -> int:
    return json.loads((r.version_dir / "manifest.json").read_text())["feature_dim"]
