"""The one interface every inference backend offers: normalised images in, patch features out."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class FeatureBackend(ABC):
    """Runs the patch-feature graph: (B, 3, S, S) float32 -> (B, D, S/8, S/8) float32."""

    name: str = "?"
    device: str = "cpu"

    @abstractmethod
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Patch features for a batch of normalised images."""

    def describe(self) -> str:
        """Short label for logs and results, e.g. 'onnxruntime:CPUExecutionProvider'."""
        return f"{self.name}:{self.device}"
