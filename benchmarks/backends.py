"""Compare the feature backends and searches available here on the same frames; prints a table.

    .venv/bin/python benchmarks/backends.py --model out/model [--data ../shared/data/mvtec/bottle]

Rows: what `auto` picks, ONNX Runtime, torch (CUDA when present), and `auto` with FAISS search.
Columns: the verdicts per frame (p/f, must agree), the largest relative score difference to
the first row, and per-stage medians over 30 passes. On a CUDA machine it also times torch at
batch 32. Used for the GPU figures in the README (lent H200).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.backends import auto_kind, create_backend, nvidia_gpu_present  # noqa: E402
from edge.inspector import Inspector  # noqa: E402
from edge.modeldir import load_model  # noqa: E402
from edge.preprocess import list_images, read_image  # noqa: E402

STAGES = ("preprocess", "backbone", "knn", "map")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/mvtec/bottle")
    ap.add_argument("--per-class", type=int, default=3, help="good and broken_large test images each")
    ap.add_argument("--passes", type=int, default=30)
    a = ap.parse_args()
    model = load_model(a.model)
    paths = list_images(a.data / "test/good")[:a.per_class] + list_images(a.data / "test/broken_large")[:a.per_class]
    frames = [read_image(p) for p in paths]
    print(f"NVIDIA driver: {nvidia_gpu_present()}; auto -> {auto_kind()}\n")
    print("| backend | device | search | verdicts | max rel. score diff | " + " | ".join(STAGES) + " (ms) |")
    print("|---|---|---|---|---|" + "---|" * len(STAGES))
    ref = None
    for kind, search in (("auto", "auto"), ("onnxruntime", "matmul"), ("torch", "matmul"), ("auto", "faiss")):
        insp = Inspector(model, backend=kind, search=search)
        res = [insp.inspect(f) for f in frames]
        scores = np.array([r.score for r in res])
        ref = scores if ref is None else ref
        t = {k: [] for k in STAGES}
        for _ in range(a.passes):
            for f in frames:
                r = insp.inspect(f)
                for k in STAGES:
                    t[k].append(r.timings_ms[k])
        meds = " | ".join(f"{statistics.median(t[k]):.2f}" for k in STAGES)
        print(f"| {kind} | {insp.backend.describe()} | {insp.search.name} | {''.join(r.verdict[0] for r in res)} | "
              f"{float(np.max(np.abs(scores - ref) / ref)):.1e} | {meds} |")
    be = create_backend("torch", model.onnx_path, model.manifest)
    if be.device.startswith("cuda"):
        import torch

        x = np.concatenate([model.geometry.inputs(frames[0], model.mean, model.std)] * 32)  # 32 frames' inputs
        for _ in range(5):
            be(x)
        torch.cuda.synchronize()
        ts = []
        for _ in range(20):
            t0 = time.perf_counter()
            be(x)
            ts.append(time.perf_counter() - t0)
        print(f"\ntorch CUDA, batch 32 incl. host/device copies: {statistics.median(ts) / 32 * 1e3:.3f} ms per image")


if __name__ == "__main__":
    main()
