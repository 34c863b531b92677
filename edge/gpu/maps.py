"""edge/scoring.py's anomaly map and edge/geometry.py's tile merge, in torch on the frame's device.

Same conventions: patch scores upsampled bilinearly (half-pixel centres, cv2.INTER_LINEAR on
float32) to the network input, tiles merged on the canvas (max, or mean where they overlap),
then one Gaussian blur, sigma 4, kernel +-4 sigma, OpenCV's BORDER_REFLECT (edge pixel
repeated: "cba|abc", which is not torch's "reflect").
"""

from __future__ import annotations

import cv2
import torch
import torch.nn.functional as F

from ..geometry import Geometry
from ..scoring import GAUSSIAN_SIGMA


def gaussian_kernel(sigma: float = GAUSSIAN_SIGMA) -> torch.Tensor:
    """The 1-D kernel edge.scoring.blur uses (cv2.getGaussianKernel, float32)."""
    k = 2 * int(4.0 * sigma + 0.5) + 1
    return torch.from_numpy(cv2.getGaussianKernel(k, sigma).astype("float32").ravel())


def _symmetric_index(n: int, pad: int, device) -> torch.Tensor:
    """Indices that pad an axis of length n by `pad` with BORDER_REFLECT ("cba|abc|cba")."""
    i = torch.arange(-pad, n + pad, device=device)
    period = 2 * n
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - 1 - i, i)


class MapMaker:
    """(B * tiles, h, w) patch scores -> (B, canvas H, canvas W) blurred anomaly maps."""

    def __init__(self, geometry: Geometry, device: torch.device, sigma: float = GAUSSIAN_SIGMA):
        self.geo = geometry
        self.kernel = gaussian_kernel(sigma).to(device)
        self.pad = len(self.kernel) // 2
        cw, ch = geometry.canvas
        self.rows = _symmetric_index(ch, self.pad, device)
        self.cols = _symmetric_index(cw, self.pad, device)

    def blur(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, H, W) -> (B, H, W): separable Gaussian with symmetric borders."""
        x = maps[:, None].index_select(2, self.rows).index_select(3, self.cols)
        k = self.kernel
        x = F.conv2d(x, k.view(1, 1, 1, -1))
        x = F.conv2d(x, k.view(1, 1, -1, 1))
        return x[:, 0]

    def __call__(self, patch_scores: torch.Tensor) -> torch.Tensor:
        geo = self.geo
        w, h = geo.size
        up = F.interpolate(patch_scores[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        if not geo.tiled:
            return self.blur(up)
        up = up.view(-1, geo.tiles, h, w)
        cw, ch = geo.canvas
        acc = up.new_zeros((up.shape[0], ch, cw))
        count = up.new_zeros((ch, cw)) if geo.merge == "mean" else None
        for t, (x, y) in enumerate(geo.origins()):
            region = acc[:, y:y + h, x:x + w]
            if count is None:  # distances >= 0: 0 is neutral for max
                acc[:, y:y + h, x:x + w] = torch.maximum(region, up[:, t])
            else:
                acc[:, y:y + h, x:x + w] = region + up[:, t]
                count[y:y + h, x:x + w] += 1.0
        if count is not None:
            acc /= count
        return self.blur(acc)
