"""Export the patch-feature module to ONNX (trunk + aggregation in one graph).

Lives in `edge/` because the runtime needs it too: calibrate extracts its features through
ONNX Runtime (4x faster than torch on a CPU for Lite0's depthwise convolutions), and a model
directory always carries its `backbone.onnx`. `export/` adds parity checks and TensorRT.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "patch_features"


def export_onnx_bytes(extractor: "nn.Module", input_size: int | tuple[int, int], dynamic_batch: bool = True,
                      batch: int = 1) -> bytes:
    """Serialise the extractor to ONNX (TorchScript exporter: fast, no onnxscript needed).

    input_size: S or (W, H); the graph's spatial shape is fixed (its padding was frozen for it)."""
    import torch

    w, h = (input_size, input_size) if isinstance(input_size, int) else input_size
    x = torch.zeros(batch, 3, h, w)
    buf = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation notice
        torch.onnx.export(
            extractor,
            x,
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
        )
    return buf.getvalue()
