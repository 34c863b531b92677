"""A new threshold without rebuilding: a new model version that shares the bank.

The new version is written by modeldir.write_version (atomic, hashed, pruned like any
other), with the active version's bank, graph and manifest, a new `threshold` and a
`threshold_change` note of where it came from; the old version stays, so rollback
restores the old threshold. Used by the signed `threshold` command and `patchcore-edge
threshold`. Files are copied, not hardlinked: a version directory must stay complete on
its own when an older one is pruned or a file in it is damaged.
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import ModelError
from .modeldir import ONNX, Model, load_model, utc_now, write_version


# One change may move the threshold by at most this factor either way: a typo (2400 for 24.00)
# or a stray 1e-300 would otherwise blind the station (every frame passes, or every frame
# fails) with nothing looking wrong. A larger move is a few steps, each one rollback-able.
MAX_STEP = 4.0


def new_threshold(old: float, value: float | None, scale: float | None) -> float:
    """The threshold asked for; ModelError when it is not a positive finite number or moves the
    current one by more than MAX_STEP either way."""
    if (value is None) == (scale is None):
        raise ModelError("give exactly one of a threshold value or a scale factor")
    given = value if value is not None else scale
    if not (isinstance(given, (int, float)) and math.isfinite(given) and given > 0):
        raise ModelError(f"{'threshold' if value is not None else 'scale'} {given!r} is not a positive finite number")
    t = value if value is not None else old * scale
    if not (math.isfinite(t) and t > 0) or (old > 0 and not 1 / MAX_STEP <= t / old <= MAX_STEP):
        raise ModelError(f"threshold {t:.5g} is {t / old:.3g} x the current {old:.5g}; one change may scale it by "
                         f"{1 / MAX_STEP:g} to {MAX_STEP:g} (a typo?); for a larger move change it in steps")
    return float(t)


def write_threshold_version(root: str | Path, value: float | None = None, scale: float | None = None,
                            origin: str = "cli", keep: int = 5, activate: bool = False,
                            base: Model | None = None) -> Path:
    """Write the active version (or `base`) again with a new threshold; returns the new version dir."""
    model = base or load_model(root)
    threshold = new_threshold(model.threshold, value, scale)
    manifest = dict(model.manifest)
    manifest["threshold"] = threshold
    manifest["created_at"] = utc_now()
    manifest["threshold_change"] = {"from_version": model.version, "previous_threshold": model.threshold,
                                    **({"value": value} if value is not None else {"scale": scale}),
                                    "origin": origin, "at": manifest["created_at"]}
    return write_version(root, manifest, model.bank, (model.path / ONNX).read_bytes(), keep=keep,
                         activate=activate)
