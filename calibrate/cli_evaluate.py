"""`patchcore-edge evaluate`: MVTec AD metrics tables for one category or a whole root."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.backbone import DEFAULT_BACKBONE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="calibrate on train/good and report MVTec AD metrics on test/",
                       description="Image AUROC, pixel AUROC, pixel F1, AUPRO and F1 at the model's threshold.")
    p.add_argument("--dataset", type=Path, required=True, help="an MVTec-layout category or a root of categories")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="efficientnet_lite0 (default) or a timm name")
    p.add_argument("--weights", type=Path, help="local weights file for non-default backbones")
    p.add_argument("--input-size", type=int, help="default: the backbone's preset")
    p.add_argument("--coreset-ratio", type=float, help="default: the backbone's preset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", type=Path, help="write heatmaps, score plots and the models here")
    p.add_argument("--json", type=Path, help="write the numbers as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .build import CalibrationConfig  # heavy imports only when this command runs
    from .evaluate import evaluate, results_table

    base = CalibrationConfig(images=args.dataset, output=args.dataset, backbone=args.backbone,
                             weights=str(args.weights) if args.weights else None, input_size=args.input_size,
                             coreset_ratio=args.coreset_ratio, seed=args.seed)
    results = evaluate(args.dataset, base, args.output_dir, args.json)
    print(results_table(results))
    times = ", ".join(f"{c}: calibrate {r['calibrate_s']:.1f} s, evaluate {r['evaluate_s']:.1f} s"
                      for c, r in results.items())
    print(f"\n{times}")
    return 0
