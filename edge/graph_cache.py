"""ONNX graphs of patch-feature extractors, cached on disk by what determines them.

Building the torch model and exporting it costs ~4 s and the torch import ~3 s more; a
station recalibrating the same backbone should pay that once. The key is the backbone name,
the weights file's sha256, input size, feature dim and the timm version; the cache lives in
$PATCHCORE_CACHE (default ~/.cache/patchcore-edge) and every file is written atomically.

The cache is outside the model directory's integrity checks, so it is never trusted blindly:
each entry records the graph's sha256 when written (a damaged entry is rebuilt), and a
recalibration passes the hash its current model's manifest records (`expect_sha256`): a
cached graph with another hash is ignored and rebuilt from the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from .backbone import DEFAULT_BACKBONE, EMBEDDED, BackboneInfo
from .errors import BackboneError
from .files import atomic_write_bytes, sha256_file


log = logging.getLogger(__name__)
HASH_KEY = "onnx_sha256"  # in the entry's .json beside the BackboneInfo fields


def cache_dir() -> Path:
    return Path(os.environ.get("PATCHCORE_CACHE", Path.home() / ".cache" / "patchcore-edge"))


def _key(name: str, weights: str | None, input_size: int | tuple[int, int], feature_dim: int | None, strides) -> str | None:
    from importlib.metadata import version

    if weights is not None:
        if not Path(weights).is_file():
            raise BackboneError(f"weights file {weights} does not exist or is not a file; "
                                "pass an existing --weights file")
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
                   use_cache: bool = True, expect_sha256: str | None = None) -> tuple[bytes, BackboneInfo]:
    """ONNX bytes of the patch-feature graph and its BackboneInfo (from cache when possible;
    with expect_sha256, only a cached graph with that hash is used)."""
    key = _key(name, weights, input_size, feature_dim, strides) if use_cache else None
    if key:
        onnx_path, info_path = cache_dir() / f"{key}.onnx", cache_dir() / f"{key}.json"
        if onnx_path.is_file() and info_path.is_file():
            cached = _read_entry(onnx_path, info_path, expect_sha256)
            if cached is not None:
                return cached
    from .features import build_extractor
    from .onnx_graph import export_onnx_bytes

    extractor, info = build_extractor(name, weights, feature_dim, input_size, strides)
    data = export_onnx_bytes(extractor, input_size)
    digest = hashlib.sha256(data).hexdigest()
    if expect_sha256 and digest != expect_sha256:
        log.warning("the graph rebuilt from the weights differs from the one the model records (another torch or "
                    "timm version?); the new version records its own hash")
    if key:
        try:
            cache_dir().mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(onnx_path, data)
            atomic_write_bytes(info_path, json.dumps({**asdict(info), HASH_KEY: digest}).encode())
        except OSError:
            pass  # a read-only home is no reason to fail calibration
    return data, info


def _read_entry(onnx_path: Path, info_path: Path, expect_sha256: str | None) -> tuple[bytes, BackboneInfo] | None:
    """A cache entry if it is intact (and has the expected hash), else None: rebuild it."""
    try:
        meta = json.loads(info_path.read_text())
        data = onnx_path.read_bytes()
        recorded = meta.pop(HASH_KEY, None)
        digest = hashlib.sha256(data).hexdigest()
        if digest != recorded:
            log.warning("graph cache entry %s is damaged or predates cache hashes; rebuilding it", onnx_path)
            return None
        if expect_sha256 and digest != expect_sha256:
            log.warning("cached graph %s is not the graph the model records (sha256 %s, manifest %s); "
                        "rebuilding it from the weights", onnx_path, digest[:12], expect_sha256[:12])
            return None
        return data, BackboneInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta.items()})
    except (OSError, ValueError, TypeError, AttributeError) as e:
        log.warning("graph cache entry %s is unreadable (%s); rebuilding it", onnx_path, e)
        return None
