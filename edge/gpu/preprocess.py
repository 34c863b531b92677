"""edge/preprocess.py's resize + normalise, written in torch so that it runs where the frame is.

The definition is the CPU one, step by step, so a model calibrated on the CPU sees the same
network input on a GPU (tests/edge/test_gpu_resident.py compares them on real images):
- halve with pyrDown (5x5 binomial kernel [1 4 6 4 1]^2 / 256, reflect-101 border, keep
  even rows/columns, integer rounding) while the image is at least 4x the target on both axes;
- then INTER_AREA when shrinking on both axes (each output pixel the area-weighted mean of
  the input cells it covers: two small matmuls, Ry @ X @ Rx^T), else INTER_LINEAR
  (half-pixel centres, as torch's align_corners=False);
- every step rounds back to uint8 values, as OpenCV does on uint8 images;
- BGR -> RGB, then x * (1 / (255 std)) - mean / std in float32 (the same two float32 ops).
Tensors here are (B, C, H, W) float32 holding integer values 0..255 until `normalise`.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


# Constants are cached per device: a CUDA graph capture may not copy from the host, and the
# warm-up run before the capture fills these caches.
@lru_cache(maxsize=16)
def _pyr_kernels(device: torch.device, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = _BINOMIAL.to(device)
    return k.view(1, 1, 1, 5).expand(c, 1, 1, 5).contiguous(), k.view(1, 1, 5, 1).expand(c, 1, 5, 1).contiguous()


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown on uint8 values: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""
    c = x.shape[1]
    kx, ky = _pyr_kernels(x.device, c)
    # separable, as OpenCV does it; sums of integers <= 255 * 256 are exact in float32, so the
    # rounding below is OpenCV's (s + 128) >> 8
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    s = F.conv2d(F.conv2d(x, kx, stride=(1, 2), groups=c), ky, stride=(2, 1), groups=c)
    return torch.floor((s + 128.0) / 256.0)


@lru_cache(maxsize=64)
def _area_matrix(src: int, dst: int, device: torch.device) -> torch.Tensor:
    """(dst, src) weights of INTER_AREA along one axis: overlap of each output cell with each
    input pixel, divided by the cell width (OpenCV's computeResizeAreaTab)."""
    scale = src / dst
    m = torch.zeros(dst, src, dtype=torch.float64)
    for d in range(dst):
        lo, hi = d * scale, min((d + 1) * scale, src)
        first, last = int(lo), min(int(-(-hi // 1)), src)  # pixels touched: floor(lo) .. ceil(hi) - 1
        for s in range(first, last):
            overlap = min(hi, s + 1) - max(lo, s)
            if overlap > 1e-3:  # OpenCV drops slivers below 1e-3 of a pixel
                m[d, s] = overlap
        m[d] /= m[d].sum()
    return m.float().to(device)


def resize_area(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """cv2.resize(..., INTER_AREA) for a shrink on both axes; size = (W, H)."""
    w, h = size
    ry = _area_matrix(x.shape[-2], h, x.device)
    rx = _area_matrix(x.shape[-1], w, x.device)
    out = torch.matmul(torch.matmul(ry, x), rx.T)
    scale_x, scale_y = x.shape[-1] / w, x.shape[-2] / h
    if scale_x == 2 and scale_y == 2:  # OpenCV's fast 2x2 path rounds halves up ((s + 2) >> 2)
        return torch.floor(out + 0.5)
    return torch.round(out)  # saturate_cast: round half to even


def resize_linear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """cv2.resize(..., INTER_LINEAR) on uint8 values (OpenCV uses 11-bit fixed point: may differ by 1)."""
    w, h = size
    out = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return torch.round(out).clamp_(0, 255)


def resize_to(x: torch.Tensor, size: tuple[int, int], pyramid_factor: int = 4) -> torch.Tensor:
    """edge.preprocess.resize_to for (B, C, H, W) uint8-valued float tensors; size = (W, H)."""
    w, h = size
    while x.shape[-2] >= pyramid_factor * h and x.shape[-1] >= pyramid_factor * w:
        x = pyr_down(x)
    if (x.shape[-2], x.shape[-1]) == (h, w):
        return x
    if x.shape[-2] >= h and x.shape[-1] >= w:
        return resize_area(x, size)
    return resize_linear(x, size)


def normalise(bgr: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(B, 3, H, W) BGR 0..255 -> RGB float32 normalised: edge.preprocess.normalise's two float32 ops."""
    scale, shift = _norm_constants(tuple(mean), tuple(std), bgr.device)
    return bgr.flip(1) * scale - shift


@lru_cache(maxsize=16)
def _norm_constants(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, 1) float32 factors: float32(1 / (255 std)) and float32(mean / std), as numpy rounds them."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32)
    return scale.view(1, 3, 1, 1).to(device), shift.view(1, 3, 1, 1).to(device)


def frames_to_tensor(frames_u8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 as uploaded -> (B, 3, H, W) float32 (values 0..255, BGR as the camera gave them)."""
    return frames_u8.float().permute(0, 3, 1, 2)  # convert, then a view: the convolutions read it strided
