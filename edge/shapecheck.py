"""Refuse a model whose backbone does not produce what its manifest (and coreset) describe.

A version whose backbone.onnx outputs another feature size or grid than the manifest's
`feature_dim` / `grid` (hashes updated, so it verifies) would otherwise load and then fail
on every frame. One forward pass on a blank input at load turns that into one ModelError
that says what differs; the daemon refuses the camera with it.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelError


def network_input_hw(manifest: dict) -> tuple[int, int]:
    """(H, W) of one network input: `input_size` is S (square) or [W, H]."""
    size = manifest["input_size"]
    if isinstance(size, (list, tuple)):
        return int(size[1]), int(size[0])
    return int(size), int(size)


def check_backbone_output(backend, manifest: dict, where: str) -> None:
    """Run the backend once; ModelError unless it gives (tiles, feature_dim, *grid)."""
    h, w = network_input_hw(manifest)
    tiling = manifest.get("tiling") or {}
    batch = int(np.prod(tiling["tiles"])) if tiling.get("tiles") else 1  # what inspect() sends: every tile
    expected = (batch, int(manifest["feature_dim"]), *(int(g) for g in manifest["grid"]))
    try:
        out = np.asarray(backend(np.zeros((batch, 3, h, w), np.float32)))
    except Exception as e:  # a graph that does not even take the manifest's input size
        raise ModelError(f"{where}: the backbone fails on the manifest's {w}x{h} input "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                         "re-export or recalibrate this version") from e
    if tuple(out.shape) != expected:
        got = "x".join(map(str, out.shape[1:])) if out.ndim == 4 else str(tuple(out.shape))
        raise ModelError(f"{where}: the backbone outputs {got} (features x grid h x w), the manifest and coreset "
                         f"say {expected[1]}x{expected[2]}x{expected[3]}; this backbone.onnx does not belong to "
                         "this model: re-export or recalibrate it")
