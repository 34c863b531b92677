"""`patchcore-edge threshold`: a new threshold for a model directory, without rebuilding.

Writes a new version that shares the bank (edge/retune.py) and makes it current. A running
daemon reads CURRENT at start only: for a station that is running, send the same change
as a signed command (`patchcore-edge recalibrate --threshold/--threshold-scale`), which
the daemon applies from the next frame.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import ConfigError
from .modeldir import load_model, prune, set_current
from .retune import write_threshold_version

# the new version and the one it replaces, for rollback; calibrate's --keep-versions has the same top
MIN_KEEP, MAX_KEEP = 2, 100


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("threshold", help="change a model's threshold (a new version sharing the bank)",
                       description="Writes a new model version with the new threshold and the same bank, and "
                                   "makes it current; the previous version stays for rollback.")
    p.add_argument("--model", type=Path, required=True, help="model directory (written by calibrate)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--value", type=float, help="the new threshold (raw score units)")
    how.add_argument("--scale", type=float, help="the current threshold times this factor (0.9 = 10%% stricter)")
    p.add_argument("--keep-versions", type=int, default=5,
                   help=f"versions kept (rollback depth; {MIN_KEEP} to {MAX_KEEP}, default 5)")
    p.add_argument("--no-activate", action="store_true", help="write the version but leave CURRENT as it is")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not MIN_KEEP <= args.keep_versions <= MAX_KEEP:
        raise ConfigError(f"--keep-versions must be {MIN_KEEP} to {MAX_KEEP} (the new version and at least the one "
                          f"it replaces, for rollback), got {args.keep_versions}")
    base = load_model(args.model)  # the active version, verified
    vdir = write_threshold_version(args.model, value=args.value, scale=args.scale, origin="patchcore-edge threshold",
                                   keep=args.keep_versions, base=base)
    model = load_model(vdir)
    if not args.no_activate:
        set_current(args.model, model.version)
        prune(args.model, args.keep_versions)  # after activation: the new version is current
    print(json.dumps({"version": model.version, "previous_version": base.version,
                      "threshold": round(model.threshold, 5), "previous_threshold": round(base.threshold, 5),
                      "active": not args.no_activate}))
    return 0
