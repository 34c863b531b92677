"""Native TensorRT backend: builds (once) and runs a serialized engine from backbone.onnx.

Engines are specific to a GPU model and TensorRT version, so they are cached next to the
model version as `exports/backbone-<gpu>-trt<version>-<precision>-b<batch>.engine` and
rebuilt when either changes. Device buffers come from torch (present on Jetsons via
JetPack) to avoid another CUDA binding. TensorRT 10 tensor API (set_input_shape,
set_tensor_address, execute_async_v3).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from ..errors import BackendError
from ..onnx_graph import INPUT_NAME, OUTPUT_NAME
from .base import FeatureBackend

log = logging.getLogger(__name__)


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendError("install TensorRT to use backend 'tensorrt' (pip install 'patchcore-edge[gpu]', or "
                           "JetPack's python3-libnvinfer on a Jetson)") from e
    return trt


def _cuda():
    try:
        import torch
    except ImportError as e:
        raise BackendError("backend 'tensorrt' needs torch with CUDA for device buffers") from e
    if not torch.cuda.is_available():
        raise BackendError("backend 'tensorrt' needs a CUDA GPU; none is visible (check the driver / nvidia-smi)")
    return torch


def tensorrt_usable() -> bool:
    """TensorRT importable and a CUDA device visible."""
    try:
        _import_trt()
        _cuda()
    except BackendError:
        return False
    return True


def engine_path(folder: Path, precision: str, batch: int) -> Path:
    """Cache file name keyed by GPU model and TensorRT version."""
    trt, torch = _import_trt(), _cuda()
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-")
    return folder / f"backbone-{gpu}-trt{trt.__version__}-{precision}-b{batch}.engine"


class _EntropyCalibrator:
    """INT8 calibration fed by good images (already normalised batches)."""

    def __new__(cls, batches: list[np.ndarray], cache: Path):
        trt, torch = _import_trt(), _cuda()

        class Calib(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                super().__init__()
                self.batches, self.i, self.cache = batches, 0, cache
                self.dev = None

            def get_batch_size(self):
                return int(self.batches[0].shape[0])

            def get_batch(self, names):
                if self.i >= len(self.batches):
                    return None
                self.dev = torch.from_numpy(self.batches[self.i]).cuda()
                self.i += 1
                return [int(self.dev.data_ptr())]

            def read_calibration_cache(self):
                return self.cache.read_bytes() if self.cache.is_file() else None

            def write_calibration_cache(self, data):
                self.cache.write_bytes(bytes(data))

        return Calib()


def build_engine(onnx_bytes: bytes, input_size: int | tuple[int, int], precision: str = "fp32", batch: int = 1,
                 calibration: list[np.ndarray] | None = None, cache_dir: Path | None = None) -> bytes:
    """Serialized engine for fixed batch `batch` and input S or (W, H); precision fp32, fp16 or
    int8 (needs calibration)."""
    trt = _import_trt()
    _cuda()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not calibration:
            raise BackendError("INT8 needs calibration images (--calibration-images DIR of good images)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _EntropyCalibrator(calibration, (cache_dir or Path(".")) / "int8.calib")
    profile = builder.create_optimization_profile()
    w, h = (input_size, input_size) if isinstance(input_size, int) else input_size
    shape = (batch, 3, h, w)
    profile.set_shape(INPUT_NAME, shape, shape, shape)
    config.add_optimization_profile(profile)
    if precision == "int8":
        config.set_calibration_profile(profile)
    data = builder.build_serialized_network(network, config)
    if data is None:
        raise BackendError("TensorRT failed to build the engine (see its log above)")
    return bytes(data)


class TensorRTBackend(FeatureBackend):
    """Runs a serialized engine; batches are split into the engine's fixed batch size."""

    name = "tensorrt"

    def __init__(self, engine_bytes: bytes):
        trt, self.torch = _import_trt(), _cuda()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise BackendError("TensorRT cannot load the engine (built for another GPU or TensorRT version?); "
                               "delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self.in_shape = tuple(self.engine.get_tensor_shape(INPUT_NAME))
        self.context.set_input_shape(INPUT_NAME, self.in_shape)
        self.out_shape = tuple(self.context.get_tensor_shape(OUTPUT_NAME))
        self.out = self.torch.empty(self.out_shape, dtype=self.torch.float32, device="cuda")
        self.device = self.torch.cuda.get_device_name(0)

    @classmethod
    def from_onnx(cls, onnx_path: Path, folder: Path, fp16: bool = False, batch: int = 1) -> TensorRTBackend:
        """Load the cached engine for this GPU/TensorRT, building and caching it when missing."""
        precision = "fp16" if fp16 else "fp32"
        folder = Path(folder) / "exports" if (Path(folder) / "manifest.json").is_file() else Path(folder)
        path = engine_path(folder, precision, batch)
        if not path.is_file():
            log.info("building TensorRT %s engine %s (once per GPU/TensorRT version)", precision, path.name)
            data = build_engine(Path(onnx_path).read_bytes(), _input_size(onnx_path), precision, batch)
            from ..files import atomic_write_bytes

            folder.mkdir(mode=0o750, parents=True, exist_ok=True)  # the model directory's rule
            atomic_write_bytes(path, data)
        return cls(path.read_bytes())

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n = self.in_shape[0]
        outs = []
        stream = self.torch.cuda.current_stream()
        for i in range(0, len(batch), n):
            chunk = batch[i:i + n]
            pad = n - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            x = self.torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).cuda()
            self.context.set_tensor_address(INPUT_NAME, int(x.data_ptr()))
            self.context.set_tensor_address(OUTPUT_NAME, int(self.out.data_ptr()))
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise BackendError("TensorRT execution failed")
            outs.append(self.out.cpu().numpy()[: n - pad])
        return np.concatenate(outs)


def _input_size(onnx_path: Path) -> tuple[int, int]:
    """(W, H) of the graph's fixed spatial input shape."""
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[3].dim_value), int(dims[2].dim_value)
