"""`patchcore-edge evaluate`: MVTec AD metrics tables for one category or a whole root."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.backbone import DEFAULT_BACKBONE
from edge.files import check_output_file, check_output_folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="calibrate on train/good and report MVTec AD metrics on test/",
                       description="Image AUROC, pixel AUROC, pixel F1, AUPRO and F1 at the model's threshold.")
    p.add_argument("--dataset", type=Path, required=True, help="an MVTec-layout category or a root of categories")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="efficientnet_lite0 (default) or a timm name")
    p.add_argument("--weights", type=Path, help="local weights file for non-default backbones")
    p.add_argument("--input-size", help="224 (square), 256x192 (W x H) or short:224; default: the backbone's preset")
    p.add_argument("--tiles", help="COLSxROWS overlapping tiles per image (default 1x1: none)")
    p.add_argument("--tile-overlap", type=float, default=0.1, help="fraction of a tile shared (default 0.1)")
    p.add_argument("--tile-merge", choices=("max", "mean"), default="max", help="map where tiles overlap")
    p.add_argument("--coreset-ratio", type=float, help="default: the backbone's preset")
    p.add_argument("--layers", help="feature stages by stride, e.g. 8,16 or 4,8,16; default: the backbone's preset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold-rule", choices=("target", "max3sigma"), default="target",
                   help="the models' threshold rule (default target)")
    p.add_argument("--target-false-reject", type=float, default=0.01,
                   help="the models' target false-reject rate (default 0.01)")
    p.add_argument("--output-dir", type=Path, help="write heatmaps, score plots and the models here")
    p.add_argument("--json", type=Path, help="write the numbers as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, results_table  # heavy imports only when this command runs
    from .operating_point import operating_table
    from .settings import load_settings

    # checked before the whole evaluation runs (it wrote them only at its end)
    if args.output_dir is not None:
        check_output_folder(args.output_dir, "--output-dir")
    if args.json is not None:
        check_output_file(args.json, "--json")
    base = load_settings(**vars(args), images=args.dataset, output=args.dataset)
    results = evaluate(args.dataset, base, args.output_dir, args.json)
    print(results_table(results))
    print("\n" + operating_table(results))
    times = ", ".join(f"{c}: calibrate {r['calibrate_s']:.1f} s, evaluate {r['evaluate_s']:.1f} s"
                      for c, r in results.items())
    print(f"\n{times}")
    return 0
