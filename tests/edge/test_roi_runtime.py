"""The ROI at run time (red team 4): a crop under 32 px a side is a camera error, never an
inspection of upscaled blur. The config refuses such an roi at load (test_config.py); this is
the check on the frame itself, for a config built in code without validation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from edge.config import CameraConfig
from edge.daemon import CameraWorker


def _error(roi, frame_shape=(900, 900, 3)):
    worker = SimpleNamespace(cfg=CameraConfig.model_construct(name="cam", roi=roi))
    return CameraWorker._roi_error(worker, np.zeros(frame_shape, np.uint8))


def test_a_tiny_crop_is_a_camera_error():
    for roi in ((0, 0, 1, 1), (0, 0, 2, 900), (10, 10, 31, 500)):
        err = _error(roi)
        assert err and "at least 32 px" in err and "fix roi of camera cam" in err, (roi, err)


def test_a_crop_that_fits_and_is_large_enough_is_inspected():
    assert _error((0, 0, 32, 32)) is None and _error((100, 100, 800, 800)) is None
    assert "does not fit inside the 900x600 frame" in _error((0, 0, 900, 900), (600, 900, 3))
