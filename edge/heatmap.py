"""Heatmap images people look at: the anomaly map as a colour map blended over the frame."""

from __future__ import annotations

import cv2
import numpy as np


def overlay(bgr: np.ndarray, amap: np.ndarray, threshold: float, max_side: int | None = None,
            alpha: float = 0.5) -> np.ndarray:
    """Colour-mapped anomaly map over the frame (BGR). Colours are absolute, not per-image:
    0 is blue, the threshold is the middle of the scale, 2x threshold and above is red, so a
    good part looks cool and a defect hot in every image."""
    img = bgr
    if max_side and max(img.shape[:2]) > max_side:
        while max(img.shape[:2]) >= 2 * max_side:  # halve cheaply first (Gaussian, so no aliasing)
            img = cv2.pyrDown(img)
        s = max_side / max(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    level = np.clip(amap / (2.0 * threshold) * 255.0, 0, 255).astype(np.uint8)
    level = cv2.resize(level, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(level, cv2.COLORMAP_JET)
    return cv2.addWeighted(img, 1.0 - alpha, colour, alpha, 0.0)


def encode_jpeg(bgr: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of a BGR image."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
