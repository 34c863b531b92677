"""Heatmap images people look at: the anomaly map as a colour map blended over the frame.

One drawing for every consumer (the MQTT heatmap, `infer`, `evaluate`, the station page):
the frame is shrunk first, then the map is coloured and blended at the small size. Shrinking
is exact 2x box halvings (OpenCV's fast INTER_AREA path) while the image is still twice too
large, then one bilinear step (a factor between 1 and 2, where bilinear is close to area
averaging): 900 -> 320 px costs ~0.3 ms here against ~1.5 ms for pyrDown + INTER_AREA at a
non-integer factor, and nothing is handed to OpenCV's worker pool (a camera thread runs it).
edge/gpu/heatmap.py draws the same picture in torch.
"""

from __future__ import annotations

import cv2
import numpy as np

# COLORMAP_JET as a 256-entry table, built once: cv2.applyColorMap(img, COLORMAP_JET) rebuilds
# it on every call (~0.2 ms, more than colouring a thumbnail); the output is identical.
JET = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_JET)


def downscale(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy no larger than max_side and the scale applied (an odd last row/column is dropped
    by a halving)."""
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img.copy(), 1.0
    out = img
    while max(out.shape[:2]) >= 2 * max_side and min(out.shape[:2]) >= 2:
        oh, ow = out.shape[0] // 2, out.shape[1] // 2
        out = cv2.resize(out[:2 * oh, :2 * ow], (ow, oh), interpolation=cv2.INTER_AREA)
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    if (out.shape[1], out.shape[0]) == size:
        return (out if out is not img else out.copy()), s
    return cv2.resize(out, size, interpolation=cv2.INTER_LINEAR), s


def colour_over(bgr: np.ndarray, amap: np.ndarray, threshold: float, alpha: float = 0.5) -> np.ndarray:
    """The map coloured and blended over an image already at its final size. Colours are
    absolute, not per-image: 0 is blue, the threshold is the middle of the scale, 2x threshold
    and above is red, so a good part looks cool and a defect hot in every image."""
    h, w = bgr.shape[:2]
    # a non-finite patch (the verdict is fail, edge/inspector.py judge) is drawn hot, not as
    # NaN cast to 0 = the coolest blue
    level = np.nan_to_num(amap / (2.0 * threshold) * 255.0, nan=255.0, posinf=255.0, neginf=0.0)
    level = np.clip(level, 0, 255).astype(np.uint8)
    level = cv2.resize(level, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(bgr, 1.0 - alpha, cv2.applyColorMap(level, JET), alpha, 0.0)


def overlay(bgr: np.ndarray, amap: np.ndarray, threshold: float, max_side: int | None = None,
            alpha: float = 0.5) -> np.ndarray:
    """Colour-mapped anomaly map over the frame (BGR), shrunk to max_side first."""
    img = downscale(bgr, max_side)[0] if max_side else bgr
    return colour_over(img, amap, threshold, alpha)


def encode_jpeg(bgr: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of a BGR image."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
