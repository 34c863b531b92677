"""`patchcore-edge export`: compile a model's backbone to ONNX or TensorRT and prove parity.

Writes into the model version's `exports/` folder: the artefact, and `exports.json` with
its sha256, opset, batch, precision and the parity report. Nothing is kept when the parity
check fails.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.errors import ConfigError, ImageError
from edge.files import atomic_write_bytes, sha256_file
from edge.modeldir import load_model, utc_now
from edge.preprocess import list_images, read_image

PARITY_IMAGES = 16


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the backbone to ONNX / TensorRT with a parity check",
                       description="Compile a model's patch-feature graph and check it against torch.")
    p.add_argument("--model", type=Path, required=True, help="model directory (its current version is used)")
    p.add_argument("--format", choices=("onnx", "tensorrt"), required=True)
    p.add_argument("--fp16", action="store_true", help="TensorRT: FP16 kernels")
    p.add_argument("--int8", action="store_true", help="TensorRT: INT8 with entropy calibration")
    p.add_argument("--calibration-images", type=Path, help="good images for INT8 calibration")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    g.add_argument("--dynamic-batch", action="store_true", help="ONNX: dynamic batch dimension")
    p.add_argument("--images", type=Path, help="images for the parity check (default: the calibration folder)")
    p.set_defaults(func=run)


def _parity_images(model, folder: Path | None) -> list[Path]:
    if folder is not None:
        if not folder.is_dir():
            raise ImageError(f"--images {folder} does not exist or is not a folder; pass a folder of images "
                             "for the parity check")
        src = folder
    else:
        source = model.manifest.get("training", {}).get("source")
        if not source:  # (Path("") would be the current folder)
            raise ImageError("no images for the parity check: the model does not record its calibration folder; "
                             "pass --images DIR")
        if not Path(source).is_dir():
            raise ImageError(f"no images for the parity check: the calibration folder {source} is gone; "
                             "pass --images DIR")
        src = Path(source)
    paths = list_images(src)[:PARITY_IMAGES]
    if not paths:
        raise ImageError(f"{src} holds no images for the parity check; pass --images DIR")
    return paths


def _record(vdir: Path, entry: dict) -> None:
    path = vdir / "exports" / "exports.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries = [e for e in entries if e["file"] != entry["file"]] + [entry]
    atomic_write_bytes(path, json.dumps(entries, indent=2).encode())


def run(args: argparse.Namespace) -> int:
    if args.int8 and args.format != "tensorrt":
        raise ConfigError("--int8 is for --format tensorrt (ONNX Runtime INT8 is not offered: see the README)")
    if args.fp16 and args.format != "tensorrt":
        raise ConfigError("--fp16 is for --format tensorrt (the ONNX export is FP32 only)")
    # --int8 --fp16 together stay what they always were: INT8 (its engine keeps FP16 fallback
    # layers anyway, as trtexec's --int8 --fp16 does)
    if args.int8 and not args.calibration_images:
        raise ConfigError("--int8 needs --calibration-images DIR (good images)")
    if args.calibration_images is not None and not args.calibration_images.is_dir():
        raise ConfigError(f"--calibration-images {args.calibration_images} does not exist or is not a folder")
    if args.format == "tensorrt" and args.dynamic_batch:
        raise ConfigError("TensorRT engines here have a fixed batch; use --batch N")
    if args.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {args.batch}")
    from edge.backends.ort_backend import OrtBackend  # torch/onnx load only when exporting

    from .onnx_export import export_onnx, rebuild_extractor
    from .parity import FixedBatch, parity_report

    model = load_model(args.model)
    images = _parity_images(model, args.images)
    out_dir = model.path / "exports"
    out_dir.mkdir(mode=0o750, exist_ok=True)  # the model directory's rule (edge/modeldir.py)
    batch = None if args.dynamic_batch else args.batch
    onnx_bytes, meta = export_onnx(model, batch)
    extractor = rebuild_extractor(model)
    if args.format == "onnx":
        candidate = OrtBackend(onnx_bytes, providers=["CPUExecutionProvider"])
        if batch:
            candidate = FixedBatch(candidate, batch)
        report = parity_report(model, extractor, candidate, images)
        target = out_dir / f"backbone-b{meta['batch']}.onnx"
        atomic_write_bytes(target, onnx_bytes)
        precision = "fp32"
    else:
        from edge.backends.trt_backend import TensorRTBackend, build_engine, engine_path

        precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
        calib = None
        if args.int8:
            import numpy as np

            geo = model.geometry  # a tiled model's engine sees tiles: calibrate INT8 on tiles too
            frames = [t for p in list_images(args.calibration_images)[:64]
                      for t in geo.inputs(read_image(p), model.mean, model.std)]
            calib = [np.stack(frames[i:i + args.batch]) for i in range(0, len(frames) - args.batch + 1, args.batch)]
        engine = build_engine(onnx_bytes, model.geometry.size, precision, args.batch, calib, out_dir)
        report = parity_report(model, extractor, TensorRTBackend(engine), images, precision)
        target = engine_path(out_dir, precision, args.batch)
        atomic_write_bytes(target, engine)
    _record(model.path, {"file": target.name, "format": args.format, "precision": precision,
                         "sha256": sha256_file(target), **meta, "parity": report, "created_at": utc_now()})
    print(f"exported   {target}")
    print(f"parity     {report['images']} images vs torch: feature max |diff| {report['feature_max_abs']:.2e}, "
          f"score max rel diff {report['score_max_rel']:.2e}, verdict mismatches {report['verdict_mismatches']}")
    return 0
