"""`patchcore-edge infer`: score image files offline; heatmap overlays + one JSON line per image."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .backends import BACKENDS
from .errors import ConfigError, ImageError
from .heatmap import encode_jpeg, overlay
from .inspector import Inspector
from .files import atomic_write_bytes, check_output_folder
from .modeldir import load_model
from .preprocess import IMAGE_EXTENSIONS, list_images, read_image

MIN_HEATMAP_SIZE = 32  # an overlay smaller than this shows nothing (the smallest image read is 32 px too)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="score image files with a model",
                       description="Score images offline; prints a JSON line per image.")
    p.add_argument("--model", type=Path, required=True, help="model directory (or one version inside it)")
    p.add_argument("images", nargs="+", type=Path, help="image files or folders")
    p.add_argument("--output-dir", type=Path, help="write heatmap overlays here, one per image: "
                   "<parent folder>_<stem>_heatmap.jpg (test/broken/000.png -> broken_000_heatmap.jpg)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="feature backend (default: auto)")
    p.add_argument("--heatmap-size", type=int, default=900,
                   help=f"longest side of written overlays, px (default 900, at least {MIN_HEATMAP_SIZE})")
    p.set_defaults(func=run)


def expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise ImageError(f"no image files ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) in {p} "
                                 "(subfolders are not searched); point at the images or their folder")
            out += found
        elif p.suffix.lower() in IMAGE_EXTENSIONS or p.is_file():
            out.append(p)
        else:
            raise ImageError(f"{p} is neither an image file nor a folder")
    return out


def run(args: argparse.Namespace) -> int:
    if args.heatmap_size < MIN_HEATMAP_SIZE:
        raise ConfigError(f"--heatmap-size must be at least {MIN_HEATMAP_SIZE} px, got {args.heatmap_size}")
    if args.output_dir:
        check_output_folder(args.output_dir, "--output-dir")
    model = load_model(args.model)
    paths = expand(args.images)  # an empty folder or a wrong path: said before the backend starts
    inspector = Inspector(model, backend=args.backend)
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in paths:
        t0 = time.perf_counter()
        try:
            frame = read_image(path)
        except ImageError as e:
            print(json.dumps({"image": str(path), "error": str(e)}), flush=True)
            failures += 1
            continue
        decode_ms = (time.perf_counter() - t0) * 1e3
        r = inspector.inspect(frame)
        rec = {"image": str(path), **r.record(),
               "timings_ms": {"decode": round(decode_ms, 2), **{k: round(v, 2) for k, v in r.timings_ms.items()}}}
        if args.output_dir:
            img = overlay(frame, r.anomaly_map, r.threshold, max_side=args.heatmap_size)
            out = args.output_dir / f"{path.parent.name}_{path.stem}_heatmap.jpg"
            atomic_write_bytes(out, encode_jpeg(img, 85))
            rec["heatmap"] = str(out)
        print(json.dumps(rec), flush=True)
    return 1 if failures else 0
