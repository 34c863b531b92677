"""Which inspector a camera gets: the device-resident torch path on a CUDA device, else the CPU one.

Rule: a camera whose backend is 'torch', or 'auto' on a machine where native TensorRT is not
usable, and where torch sees a CUDA device, gets edge/gpu/resident.py's ResidentInspector
(frame -> verdict -> heatmap JPEG on the GPU). Everything else - every CPU machine, an
explicit 'onnxruntime' or 'tensorrt' backend - keeps edge/inspector.py's Inspector
(ONNX Runtime + BLAS on a CPU), unchanged. PATCHCORE_RESIDENT=0 turns the resident path off;
PATCHCORE_RESIDENT=cpu forces it onto the CPU (slow: for tests of the wiring without a GPU).
This module does not import torch unless an NVIDIA driver is present (it costs ~1 s and
RSS on a CPU box).
"""

from __future__ import annotations

import logging
import os

from ..errors import PatchcoreError

log = logging.getLogger(__name__)


def resident_device(backend: str) -> str | None:
    """'cuda' when a camera with this backend setting should run device-resident, else None."""
    setting = os.environ.get("PATCHCORE_RESIDENT", "1")
    if setting == "0" or backend not in ("auto", "torch"):
        return None
    if setting == "cpu":
        return "cpu"
    from ..backends import nvidia_gpu_present

    if not nvidia_gpu_present():
        return None
    if backend == "auto":
        from ..backends.trt_backend import tensorrt_usable

        if tensorrt_usable():  # a native engine was asked for by installing TensorRT: keep it
            return None
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() else None


def open_inspector(model, backend: str = "auto", search: str = "auto", reweight: bool = False):
    """The inspector for one camera's model (see the module doc for the rule)."""
    from ..inspector import Inspector

    device = resident_device(backend) if search == "auto" else None
    if device:
        try:
            from .resident import ResidentInspector

            return ResidentInspector(model, device=device, reweight=reweight)
        except PatchcoreError:
            raise  # the model itself is refused: the same reason on any path
        except Exception as e:  # out of device memory, broken CUDA install: the host path still works
            log.warning("device-resident inspection unavailable on %s (%s); using the %s backend path",
                        device, str(e).splitlines()[0][:200] if str(e) else type(e).__name__, backend)
    return Inspector(model, backend=backend, search=search, reweight=reweight)


def heatmap_jpeg(inspector, frame, r, max_side: int | None, quality: int) -> bytes:
    """The heatmap JPEG of inspection r over frame: on the device for a resident inspector, else cv2."""
    draw = getattr(inspector, "heatmap_jpeg", None)
    if draw is not None:
        return draw(frame, r, max_side, quality)
    from ..heatmap import encode_jpeg, overlay

    return encode_jpeg(overlay(frame, r.anomaly_map, r.threshold, max_side), quality)


def share_batches(workers, window_s: float) -> list:
    """Cameras whose resident inspectors hold one model version share a batcher (edge/gpu/batching.py);
    nothing to do (and torch never imported) when no camera runs device-resident."""
    import sys

    if window_s <= 0 or f"{__name__}.resident" not in sys.modules:
        return []
    from .batching import share_batches as share

    return share(list(workers), window_s)
