"""The images of the page: the full frame with the ROI drawn (heatmap blended into the ROI on
request) and failure pictures. Run on web threads only, never on a camera thread.

Cheap by construction, since every millisecond here is taken from inspection on a small CPU:
the frame is shrunk first (exact halvings, then one bilinear step) and the anomaly map is
coloured and blended at the small size only; OpenCV releases the GIL in all of it."""

from __future__ import annotations

import cv2
import numpy as np

from ..heatmap import encode_jpeg

# COLORMAP_JET as a 256-entry table, built once: cv2.applyColorMap(img, COLORMAP_JET) rebuilds
# it on every call (~0.2 ms, more than colouring a thumbnail); the output is identical.
JET = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_JET)

PASS_BGR, FAIL_BGR = (80, 200, 60), (40, 40, 230)
THUMB_SIDE, LARGE_SIDE = 160, 800


def downscale(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy no larger than max_side and the scale applied. Exact 2x box halvings (OpenCV's
    fast INTER_AREA path; an odd last row/column is dropped) while the image is still twice
    too large, then one bilinear step (a factor between 1 and 2, where bilinear is close to
    area averaging): 900 -> 640 px costs ~0.5 ms of CPU here against ~3.5 ms for INTER_AREA
    at a non-integer factor, 900 -> 160 px ~0.2 ms against ~1.5 ms."""
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


def overlay(bgr: np.ndarray, amap: np.ndarray, threshold: float, alpha: float = 0.5) -> np.ndarray:
    """edge.heatmap.overlay (the MQTT heatmap's absolute colours: 0 blue, the threshold the middle
    of the scale, 2x threshold and above red) of an image already at its final size, with the
    colour table built once; a test checks that both give the same pixels."""
    h, w = bgr.shape[:2]
    level = np.clip(amap / (2.0 * threshold) * 255.0, 0, 255).astype(np.uint8)
    level = cv2.resize(level, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(bgr, 1.0 - alpha, cv2.applyColorMap(level, JET), alpha, 0.0)


def roi_box(roi, shape, scale: float) -> tuple[int, int, int, int]:
    """The ROI (or the whole frame) in the scaled image, clipped to it."""
    h, w = shape[:2]
    x, y, rw, rh = roi if roi else (0, 0, round(w / scale), round(h / scale))
    x0, y0 = min(w - 1, round(x * scale)), min(h - 1, round(y * scale))
    x1, y1 = min(w, max(x0 + 1, round((x + rw) * scale))), min(h, max(y0 + 1, round((y + rh) * scale)))
    return x0, y0, x1, y1


def annotated(frame: np.ndarray, roi, amap: np.ndarray | None, threshold: float, verdict: str, max_side: int,
              heatmap: bool) -> np.ndarray:
    """The full frame scaled to max_side, the ROI outlined in the verdict's colour and, with
    `heatmap`, the anomaly map blended into the ROI (same absolute colours as the MQTT heatmap)."""
    img, s = downscale(frame, max_side)
    x0, y0, x1, y1 = roi_box(roi, img.shape, s)
    if heatmap and amap is not None:
        img[y0:y1, x0:x1] = overlay(np.ascontiguousarray(img[y0:y1, x0:x1]), amap, threshold)
    thick = max(2, round(max(img.shape[:2]) / 300))
    cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), FAIL_BGR if verdict == "fail" else PASS_BGR, thick)
    return img


def live_jpeg(latest, heatmap: bool, max_side: int, quality: int) -> bytes:
    r = latest.result
    return encode_jpeg(annotated(latest.frame, latest.roi, latest.anomaly_map, r["threshold"], r["verdict"],
                                 max_side, heatmap), quality)


def failure_jpeg(f, size: str, quality: int) -> bytes:
    """The inspected ROI with its heatmap: a thumbnail for the strip, a larger one to open."""
    frame = f.frame
    if f.roi:
        x, y, w, h = f.roi
        frame = frame[y:y + h, x:x + w]
    small, _ = downscale(frame, THUMB_SIDE if size == "thumb" else LARGE_SIDE)  # shrink first, colour the small one
    return encode_jpeg(overlay(small, f.anomaly_map, f.result["threshold"]), quality)
