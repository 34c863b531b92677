"""The images of the page: the full frame with the ROI drawn (heatmap blended into the ROI on
request) and failure pictures. Run on web threads only, never on a camera thread.

Cheap by construction, since every millisecond here is taken from inspection on a small CPU:
the frame is shrunk first (exact halvings, then one bilinear step) and the anomaly map is
coloured and blended at the small size only; OpenCV releases the GIL in all of it."""

from __future__ import annotations

import cv2
import numpy as np

from ..heatmap import colour_over, downscale, encode_jpeg

PASS_BGR, FAIL_BGR = (80, 200, 60), (40, 40, 230)
THUMB_SIDE, LARGE_SIDE = 160, 800


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
        img[y0:y1, x0:x1] = colour_over(np.ascontiguousarray(img[y0:y1, x0:x1]), amap, threshold)
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
    return encode_jpeg(colour_over(small, f.anomaly_map, f.result["threshold"]), quality)
