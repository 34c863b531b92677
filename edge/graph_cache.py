"""ONNX graphs of patch-feature extractors, cached on disk by what determines them.

Building the torch model and exporting it costs ~4 s and the torch import ~3 s more; a
station recalibrating the same backbone should pay that once. The key is the backbone name,
the weights file's sha256, input size, feature dim and the timm version; the cache lives in
$PATCHCORE_CACHE (default ~/.cache/patchcore-edge) and every file is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from .backbone import DEFAULT_BACKBONE, EMBEDDED, BackboneInfo


def cache_dir() -> Path:
    return Path(os.environ.get("PATCHCORE_CACHE", Path.home() / ".cache" / "patchcore-edge"))


def _key(name: str, weights: str | None, input_size: int | tuple[int, int], feature_dim: int | None, strides) -> str | None:
    from importlib.metadata import version

    from .backbone import sha256_file

    if weights is not None:
        wsha = sha256_file(weights)
    elif name in EMBEDDED:
        from .backbone import embedded_weights_path

        wsha = sha256_file(embedded_weights_path(name))
    else:
        return None  # hub weights: no cheap fingerprint, do not cache
    raw = json.dumps([name, wsha, input_size, feature_dim, list(strides), version("timm")])
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def extractor_onnx(name: str = DEFAULT_BACKBONE, weights: str | None = None, input_size: int | tuple[int, int] = 224,
                   feature_dim: int | None = None, strides: tuple[int, ...] = (8, 16),
                   use_cache: bool = True) -> tuple[bytes, BackboneInfo]:
    """ONNX bytes of the patch-feature graph and its BackboneInfo (from cache when possible)."""
    from .modeldir import atomic_write_bytes

    key = _key(name, weights, input_size, feature_dim, strides) if use_cache else None
    if key:
        onnx_path, info_path = cache_dir() / f"{key}.onnx", cache_dir() / f"{key}.json"
        if onnx_path.is_file() and info_path.is_file():
            info = json.loads(info_path.read_text())
            info = BackboneInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in info.items()})
            return onnx_path.read_bytes(), info
    from .features import build_extractor
    from .onnx_graph import export_onnx_bytes

    extractor, info = build_extractor(name, weights, feature_dim, input_size, strides)
    data = export_onnx_bytes(extractor, input_size)
    if key:
        try:
            cache_dir().mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(onnx_path, data)
            atomic_write_bytes(info_path, json.dumps(asdict(info)).encode())
        except OSError:
            pass  # a read-only home is no reason to fail calibration
    return data, info
