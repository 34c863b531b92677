"""Re-export a model version's patch-feature graph from torch to ONNX (batch options, checker)."""

from __future__ import annotations

import onnx

from edge.errors import ModelError
from edge.features import build_extractor
from edge.modeldir import Model
from edge.onnx_graph import OPSET, export_onnx_bytes


def rebuild_extractor(model: Model):
    """The torch module a model version was calibrated with; refuses if the weights changed."""
    bb = model.spec.backbone
    extractor, info = build_extractor(bb.name, bb.weights_path, model.spec.feature_dim_request,
                                      model.geometry.size, bb.strides)
    if info.weights_sha256 != bb.weights_sha256:
        raise ModelError(f"the weights of {bb.name} ({info.weights_source}) differ from those {model.path} was "
                         "calibrated with (sha256 mismatch); recalibrate or restore the original weights file")
    return extractor


def export_onnx(model: Model, batch: int | None = 1) -> tuple[bytes, dict]:
    """ONNX bytes (static batch, or dynamic when batch is None) checked by onnx.checker."""
    extractor = rebuild_extractor(model)
    data = export_onnx_bytes(extractor, model.geometry.size, dynamic_batch=batch is None, batch=batch or 1)
    onnx.checker.check_model(onnx.load_from_string(data))
    return data, {"opset": OPSET, "batch": batch if batch else "dynamic", "input": "images",
                  "output": "patch_features", "input_size": model.manifest["input_size"]}  # as written (S or [W, H])
