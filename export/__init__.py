"""Offline export: a model's backbone to ONNX / TensorRT, with parity checks against torch."""
