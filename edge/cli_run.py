"""`patchcore-edge run --config FILE`: the inspection daemon."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .config import load_config
from .daemon import run_daemon

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the inspection daemon (cameras -> verdicts -> MQTT)",
                       description="Inspect camera frames and publish pass/fail and heatmaps over MQTT.")
    p.add_argument("--config", type=Path, required=True, help="daemon YAML (see configs/)")
    p.add_argument("--print-results", action="store_true", help="also print each verdict as a JSON line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    for warning in cfg.warnings():
        log.warning("%s", warning)
    if args.print_results:
        cfg.print_results = True
    return run_daemon(cfg)
