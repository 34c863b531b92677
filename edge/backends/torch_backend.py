"""PyTorch backend: the reference implementation; CUDA when a device is present."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import FeatureBackend


class TorchBackend(FeatureBackend):
    """Runs the PatchFeatures module directly (slow on CPU for depthwise convs; exact reference)."""

    name = "torch"

    def __init__(self, extractor: nn.Module, device: str | None = None, half: bool = False):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.half = half and self.device.startswith("cuda")
        self.model = extractor.to(self.device).eval()
        if self.half:
            self.model = self.model.half()

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.half:
            x = x.half()
        return self.model(x).float().cpu().numpy()
