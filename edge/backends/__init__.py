"""Backend registry: 'auto', 'torch', 'onnxruntime', 'tensorrt' behind one interface.

'auto' picks the fastest one that can run here: native TensorRT when the `tensorrt` package
and a CUDA device are present, else ONNX Runtime on a GPU provider (TensorRT -> CUDA), else
torch on a CUDA GPU, else ONNX Runtime on the CPU, else torch on the CPU. A missing optional package gives
"install X to use backend Y", not an unknown-type error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import BackendError
from ..geometry import Geometry
from ..manifest import parse_manifest
from .base import FeatureBackend

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")


def create_backend(kind: str, onnx_path: str | Path, manifest: dict, engine_dir: str | Path | None = None,
                   fp16: bool = False) -> FeatureBackend:
    """A feature backend for one model version (its backbone.onnx and manifest)."""
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
    if kind == "auto":
        kind = auto_kind()
        log.debug("backend auto -> %s", kind)
    if kind == "onnxruntime":
        from .ort_backend import OrtBackend

        return OrtBackend(str(onnx_path), cache_dir=str(engine_dir) if engine_dir else None)
    if kind == "tensorrt":
        from .trt_backend import TensorRTBackend

        # a tiled model scores its tiles as one batch: build the engine for that batch
        return TensorRTBackend.from_onnx(Path(onnx_path), Path(engine_dir or Path(onnx_path).parent), fp16=fp16,
                                         batch=Geometry.from_manifest(manifest).tiles)
    from ..features import build_extractor
    from .torch_backend import TorchBackend

    spec = parse_manifest(manifest, str(onnx_path))
    extractor, _ = build_extractor(spec.backbone.name, spec.backbone.weights_path, spec.feature_dim_request,
                                   Geometry.from_manifest(manifest).size, spec.backbone.strides)
    return TorchBackend(extractor, half=fp16)


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver is loaded (server/desktop GPU or Jetson), checked without importing torch."""
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvhost-ctrl-gpu", "/proc/driver/nvidia"))


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def auto_kind() -> str:
    """The fastest that runs here: native TensorRT; ONNX Runtime on a GPU provider; torch on
    CUDA (a GPU machine with the CPU-only onnxruntime wheel); ONNX Runtime on the CPU; torch."""
    from .trt_backend import tensorrt_usable

    if tensorrt_usable():
        return "tensorrt"
    try:
        from .ort_backend import available_providers

        providers = available_providers()
    except BackendError:
        providers = []
    if providers and providers[0] != "CPUExecutionProvider":
        return "onnxruntime"
    # torch is imported only when a driver is there: on a CPU box it would cost ~1 s and RSS
    if nvidia_gpu_present() and _torch_cuda():
        return "torch"
    if providers:
        return "onnxruntime"
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise BackendError("no inference backend: pip install onnxruntime (or torch)") from e
    return "torch"
