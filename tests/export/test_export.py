import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.backends import create_backend
from edge.backends.ort_backend import OrtBackend, available_providers
from edge.errors import BackendError
from edge.modeldir import load_model
from export.onnx_export import export_onnx, rebuild_extractor
from edge.preprocess import list_images
from export.parity import ParityError, parity_report

ROOT = Path(__file__).resolve().parents[2]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "patchcore_edge", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_onnx_export_parity_and_record(small_model, bottle):
    r = cli("export", "--model", small_model, "--format", "onnx", "--images", bottle / "test/broken_large")
    assert r.returncode == 0, r.stderr
    vdir = load_model(small_model).path
    entries = json.loads((vdir / "exports/exports.json").read_text())
    e = entries[-1]
    assert e["file"] == "backbone-b1.onnx" and e["opset"] == 17 and e["parity"]["ok"]
    assert e["parity"]["feature_max_abs"] < 1e-3 and e["parity"]["verdict_mismatches"] == 0
    assert (vdir / "exports" / e["file"]).is_file()
    be = OrtBackend(str(vdir / "exports" / e["file"]))
    assert be(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 96, 56, 56)


def test_dynamic_batch_export_runs_any_batch(small_model):
    model = load_model(small_model)
    data, meta = export_onnx(model, None)
    assert meta["batch"] == "dynamic"
    assert OrtBackend(data)(np.zeros((3, 3, 224, 224), np.float32)).shape[0] == 3


def test_parity_check_fails_on_a_wrong_graph(small_model, bottle):
    model = load_model(small_model)
    extractor = rebuild_extractor(model)

    class Shifted(OrtBackend):
        def __call__(self, batch):
            return super().__call__(batch) + 0.05

    data, _ = export_onnx(model, None)
    with pytest.raises(ParityError, match="feature max"):
        parity_report(model, extractor, Shifted(data), list_images(bottle / "test/good")[:2])

    class Overflows(OrtBackend):  # what an FP16 engine that overflows returns: NaN passed every check
        def __call__(self, batch):
            out = super().__call__(batch)
            out[0, 0, 0, 0] = np.nan
            return out

    with pytest.raises(ParityError, match="non-finite features on 1 of 2 inputs"):
        parity_report(model, extractor, Overflows(data), list_images(bottle / "test/good")[:2], precision="fp16")


def test_corrupt_or_missing_onnx_is_a_clear_error(small_model, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(BackendError, match="ONNX Runtime cannot load"):
        OrtBackend(str(bad))
    with pytest.raises(BackendError, match="cannot load"):
        OrtBackend(str(tmp_path / "missing.onnx"))


def test_backend_names_and_the_cpu_provider(small_model):
    model = load_model(small_model)
    assert available_providers()[-1] == "CPUExecutionProvider"
    with pytest.raises(BackendError, match="unknown backend"):
        create_backend("openvino", model.onnx_path, model.manifest)
    assert create_backend("torch", model.onnx_path, model.manifest).name == "torch"


def test_tensorrt_without_tensorrt_or_gpu_says_what_to_install(small_model):
    from edge.backends.trt_backend import tensorrt_usable

    if tensorrt_usable():
        pytest.skip("TensorRT and a CUDA device are present: the error path cannot be exercised")
    model = load_model(small_model)
    with pytest.raises(BackendError, match="TensorRT|CUDA"):
        create_backend("tensorrt", model.onnx_path, model.manifest)
    r = cli("export", "--model", small_model, "--format", "tensorrt", "--fp16")
    assert r.returncode == 2 and ("TensorRT" in r.stderr or "CUDA" in r.stderr)


def test_tensorrt_engine_parity_on_gpu(small_model, bottle):
    from edge.backends.trt_backend import tensorrt_usable

    if not tensorrt_usable():
        pytest.skip("needs the tensorrt package and a CUDA device (not on this machine)")
    r = cli("export", "--model", small_model, "--format", "tensorrt", "--fp16", "--images", bottle / "test/good")
    assert r.returncode == 0, r.stderr


def test_auto_prefers_a_cuda_gpu_over_the_cpu(small_model):
    """On a GPU machine 'auto' must not settle for ONNX Runtime's CPU provider."""
    import torch

    from edge.backends import nvidia_gpu_present

    model = load_model(small_model)
    be = create_backend("auto", model.onnx_path, model.manifest)
    if nvidia_gpu_present() and torch.cuda.is_available():
        assert be.describe() not in ("onnxruntime:CPUExecutionProvider", "torch:cpu"), be.describe()
    else:
        assert be.describe() == "onnxruntime:CPUExecutionProvider"
