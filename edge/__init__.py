"""patchcore-edge runtime: backbone, preprocessing, scoring, model directory, daemon.

`calibrate/` and `export/` import from here; nothing here imports them.
"""

import os

# OpenBLAS worker threads busy-wait after each matmul (the kNN search) by default, stealing
# the CPU from ONNX Runtime, decoding, other cameras and a background recalibration.
# Measured here: recalibrating from 200 live frames took 35.5 s with the default spin and
# 17.4 s with it cut to the minimum. Must be set before NumPy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
