"""Batch feature extraction over image files: decode in threads, run the backend in batches.

Shared by calibrate, evaluate and infer so that all use the same preprocessing. With a
tiled geometry every image gives `tiles` consecutive network inputs (and feature maps).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import ImageError
from .geometry import Geometry, as_geometry
from .preprocess import read_image

log = logging.getLogger(__name__)


def _load(path: Path, geo: Geometry, mean, std
          ) -> tuple[Path, np.ndarray | None, tuple[int, int] | None, str | None]:
    try:
        rgb = read_image(path)
    except ImageError as e:
        return path, None, None, str(e)
    return path, geo.inputs(rgb, mean, std), rgb.shape[:2], None


def iter_inputs(paths: Iterable[Path], size: Geometry | int | tuple[int, int], mean, std, workers: int | None = None
                ) -> Iterator[tuple[Path, np.ndarray | None, tuple[int, int] | None, str | None]]:
    """(path, inputs (tiles, 3, H, W) or None, original (h, w), error) per file, in order;
    OpenCV decodes off the GIL."""
    geo = as_geometry(size)
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(lambda p: _load(Path(p), geo, mean, std), paths)


def extract_features(backend, paths: list[Path], size: Geometry | int | tuple[int, int], mean, std, batch: int = 16,
                     progress: bool = True, desc: str = "features", callback=None
                     ) -> tuple[np.ndarray, list[Path], list[tuple[int, int]]]:
    """Patch features (B * tiles, D, h, w) for every readable image (its tiles consecutive);
    unreadable ones are skipped with a warning. size: a Geometry, S or (W, H)."""
    feats, kept, shapes, pending = [], [], [], []

    def flush():
        if pending:
            feats.append(backend(np.stack(pending)))
            pending.clear()

    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False)
    for i, (path, x, hw, err) in enumerate(iter_inputs(paths, size, mean, std)):
        bar.update(1)
        if callback is not None:
            callback(i + 1, len(paths))
        if err:
            log.warning("skipping %s", err)
            continue
        pending.extend(x)
        kept.append(path)
        shapes.append(hw)
        if len(pending) >= batch:
            flush()
    flush()
    bar.close()
    if not kept:
        raise ImageError(f"none of the {len(paths)} files could be read as an image; check the folder")
    return np.concatenate(feats), kept, shapes
