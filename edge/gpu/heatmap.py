"""edge/heatmap.py's overlay in torch, on the device that holds the frame; JPEG by nvJPEG on CUDA.

Same picture: the frame shrunk to max_side (exact 2x box halvings while >= 2x too large, then
one bilinear step, as edge.heatmap.downscale), the map
scaled so the threshold is mid-scale (0 blue, 2x threshold and above red), truncated to uint8,
resized linearly to the picture, JET colour map (OpenCV's own table), blended 50/50.
JPEG: torchvision.io.encode_jpeg on a CUDA tensor (nvJPEG) when torchvision offers it there,
else cv2.imencode on the host (one copy of the small picture).
"""

from __future__ import annotations

import logging
from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import preprocess as pp

log = logging.getLogger(__name__)

_JET = torch.from_numpy(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, :].copy())


@lru_cache(maxsize=4)
def _jet(device: torch.device) -> torch.Tensor:
    return _JET.to(device)


def overlay(frame: torch.Tensor, amap: torch.Tensor, threshold: float, max_side: int | None = None,
            alpha: float = 0.5) -> torch.Tensor:
    """(3, H, W) BGR 0..255 float frame, (h, w) anomaly map -> (3, h', w') BGR uint8 picture."""
    img = frame[None]
    h0, w0 = img.shape[-2:]
    if max_side and max(h0, w0) > max_side:
        while max(img.shape[-2:]) >= 2 * max_side and min(img.shape[-2:]) >= 2:
            oh, ow = img.shape[-2] // 2, img.shape[-1] // 2
            img = torch.floor(F.avg_pool2d(img[..., :2 * oh, :2 * ow], 2) + 0.5)  # OpenCV's 2x2 path rounds up
        s = max_side / max(h0, w0)
        size = (max(1, round(w0 * s)), max(1, round(h0 * s)))
        if (img.shape[-1], img.shape[-2]) != size:
            img = pp.resize_linear(img, size)
    h, w = img.shape[-2:]
    level = torch.nan_to_num(amap / (2.0 * threshold) * 255.0, nan=255.0, posinf=255.0, neginf=0.0)
    level = level.clamp(0, 255).floor()  # numpy's astype(uint8) truncates; non-finite is hot, as on the CPU
    level = F.interpolate(level[None, None], size=(h, w), mode="bilinear", align_corners=False)
    level = level.round().clamp(0, 255)[0, 0].long()
    colour = _jet(amap.device)[level].permute(2, 0, 1).float()  # (3, h, w) BGR
    return (img[0] * (1.0 - alpha) + colour * alpha).round().clamp(0, 255).to(torch.uint8)


def nvjpeg_available(device: torch.device) -> bool:
    """torchvision encodes JPEG on this CUDA device (nvJPEG); probed once with a tiny image."""
    if device.type != "cuda":
        return False
    try:
        from torchvision.io import encode_jpeg

        encode_jpeg(torch.zeros((3, 16, 16), dtype=torch.uint8, device=device), quality=80)
        return True
    except Exception as e:  # old torchvision, CPU-only build, missing nvJPEG library
        log.info("JPEG on the CPU: torchvision cannot encode on %s (%s)", device, str(e).splitlines()[0][:200])
        return False


def encode(bgr: torch.Tensor, quality: int, on_device: bool) -> bytes:
    """(3, h, w) BGR uint8 -> JPEG bytes."""
    if on_device:
        from torchvision.io import encode_jpeg

        return encode_jpeg(bgr.flip(0).contiguous(), quality=int(quality)).cpu().numpy().tobytes()
    ok, buf = cv2.imencode(".jpg", bgr.permute(1, 2, 0).cpu().numpy(), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
