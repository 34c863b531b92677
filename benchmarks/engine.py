"""Benchmark: calibrate end to end and offline infer on MVTec bottle; prints markdown tables.

    .venv/bin/python benchmarks/engine.py [--data ../shared/data/mvtec/bottle] [--repeats 3]

Run it on an idle machine; it reports medians. The first calibration warms the ONNX graph
cache and numba's compile cache and is reported separately as "cold".
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calibrate.build import calibrate  # noqa: E402
from calibrate.settings import CalibrationSettings  # noqa: E402
from edge.backbone import DEFAULT_BACKBONE, preset  # noqa: E402
from edge.inspector import Inspector  # noqa: E402
from edge.modeldir import load_model  # noqa: E402
from edge.preprocess import list_images, read_image  # noqa: E402


def calib(data: Path, ratio: float | None, work: Path) -> tuple[float, dict]:
    out = work / f"m{time.perf_counter_ns()}"
    t = time.perf_counter()
    r = calibrate(CalibrationSettings(images=data / "train/good", output=out, coreset_ratio=ratio),
                  progress=lambda *a: None)
    total = time.perf_counter() - t
    return total, r.timings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/mvtec/bottle")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-10", action="store_true", help="skip the 10x-default coreset run")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pc-bench-"))
    try:
        default = preset(DEFAULT_BACKBONE).coreset_ratio
        cold, _ = calib(a.data, None, work)
        runs = [calib(a.data, None, work) for _ in range(a.repeats)]
        rows = [(f"{default:.2%} (default)", runs)]
        if not a.skip_10:
            rows.append((f"{10 * default:.2%} (10x default)", [calib(a.data, 10 * default, work)]))
        print(f"\nCalibrate bottle (209 images), first run (cold caches): {cold:.1f} s\n")
        print("| coreset ratio | runs | total s (median) | features s | coreset s | threshold s | write s |")
        print("|---|---|---|---|---|---|---|")
        for name, rs in rows:
            med = lambda k: statistics.median(r[1][k] for r in rs)  # noqa: E731
            print(f"| {name} | {len(rs)} | {statistics.median(r[0] for r in rs):.1f} | {med('features'):.1f} | "
                  f"{med('coreset'):.1f} | {med('threshold'):.2f} | {med('write'):.2f} |")

        model = load_model(next(work.iterdir()))
        tests = sorted(p for d in (a.data / "test").iterdir() for p in list_images(d))
        results = {}
        for backend in ("onnxruntime", "torch"):
            insp = Inspector(model, backend=backend)
            insp.inspect(read_image(tests[0]))
            stages: dict[str, list[float]] = {}
            verdicts = []
            for p in tests:
                t = time.perf_counter()
                frame = read_image(p)
                stages.setdefault("decode", []).append((time.perf_counter() - t) * 1e3)
                r = insp.inspect(frame)
                verdicts.append(r.verdict)
                for k, v in r.timings_ms.items():
                    stages.setdefault(k, []).append(v)
            results[backend] = (stages, verdicts)
        print(f"\nOffline infer, {len(tests)} bottle test images, median ms per image\n")
        keys = ["decode", "preprocess", "backbone", "knn", "map"]
        print("| backend | " + " | ".join(keys) + " | total excl. decode |")
        print("|---|" + "---|" * (len(keys) + 1))
        for backend, (stages, _) in results.items():
            med = {k: statistics.median(stages[k]) for k in keys}
            print(f"| {backend} | " + " | ".join(f"{med[k]:.2f}" for k in keys)
                  + f" | {sum(med[k] for k in keys[1:]):.2f} |")
        ort_b = statistics.median(results["onnxruntime"][0]["backbone"])
        tor_b = statistics.median(results["torch"][0]["backbone"])
        same = np.mean(np.array(results["onnxruntime"][1]) == np.array(results["torch"][1]))
        print(f"\ntorch / onnxruntime backbone time (same run): {tor_b / ort_b:.1f}x; "
              f"same verdicts on {same:.0%} of the test images")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
