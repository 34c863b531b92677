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


def new_threshold(old: float, value: float | None, scale: float | None) -> float:
    """The threshold asked for; ModelError when it is not a positive finite number."""
    if (value is None) == (scale is None):
        raise ModelError("give exactly one of a threshold value or a scale factor")
    t = value if value is not None else old * scale
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
        raise ModelError(f"threshold {t!r} is not a positive finite number")
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
