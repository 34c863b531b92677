"""ONNX Runtime backend; providers tried in the order TensorRT -> CUDA -> CPU."""

from __future__ import annotations

import os

import numpy as np

from ..errors import BackendError
from ..onnx_graph import INPUT_NAME
from .base import FeatureBackend

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers, in our preference order."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendError("install onnxruntime (CPU) or onnxruntime-gpu to use backend 'onnxruntime'") from e
    have = set(ort.get_available_providers())
    return [p for p in PROVIDER_ORDER if p in have]


class OrtBackend(FeatureBackend):
    """A session over an ONNX file or bytes; `providers=None` means the best available."""

    name = "onnxruntime"

    def __init__(self, onnx_model: bytes | str, providers: list[str] | None = None, threads: int | None = None,
                 cache_dir: str | None = None):
        import onnxruntime as ort

        chosen = providers or available_providers()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # PATCHCORE_THREADS caps a background calibration so that inspection keeps its cores
        opts.intra_op_num_threads = threads or int(os.environ.get("PATCHCORE_THREADS", 0)) or os.cpu_count() or 1
        opts.log_severity_level = 3
        # Idle worker threads must not spin: they would steal the CPU from decoding, BLAS
        # (kNN) and the other cameras between frames (measured: kNN 2.5 ms -> 11 ms).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        provider_args = []
        for p in chosen:
            if p == "TensorrtExecutionProvider" and cache_dir:
                provider_args.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache_dir}))
            else:
                provider_args.append(p)
        try:
            self.session = ort.InferenceSession(onnx_model, sess_options=opts, providers=provider_args)
        except Exception as e:
            what = onnx_model if isinstance(onnx_model, str) else "in-memory model"
            raise BackendError(f"ONNX Runtime cannot load {what}: {str(e).splitlines()[0]}; re-run export") from e
        self.device = self.session.get_providers()[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]
