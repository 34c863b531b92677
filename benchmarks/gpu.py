"""The device-resident inspection path (edge/gpu/): stage table, per-frame p50/p99, batches and
the daemon through the real broker; prints the device's name and markdown tables.

    .venv/bin/python benchmarks/gpu.py --model out/model [--device cuda|cpu] [--passes 50]
        [--daemon-seconds 20] [--cameras 16 --camera-fps 30]

1. stages (profiled: synchronised after each stage, eager, so slower than the real path):
   upload, preprocess, backbone, knn, map, heatmap (colour map + blend + JPEG), beside the
   CPU path (ONNX Runtime + BLAS) on the same frames, with both paths' verdicts;
2. per frame, as the daemon runs it (CUDA graphs on a GPU): frame -> verdict and frame ->
   verdict + heatmap JPEG, p50/p99;
3. batches of frames (inspect_many): ms a frame at batch 1, 8, 32;
4. --daemon-seconds S: the daemon in process through Mosquitto (benchmarks/daemon.py's run):
   one camera at 20 frames/s with a heatmap every frame, then --cameras x --camera-fps
   pre-decoded cameras, heatmap every frame: results/s, frame -> published p50/p99, dropped;
   --peak-cameras N: N cameras delivering as fast as they can, heatmap once a second each.
On a machine without CUDA it runs the same torch code on the CPU: a smoke check of the
script and the path, not GPU figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from edge.gpu import heatmap_jpeg  # noqa: E402
from edge.gpu.resident import ResidentInspector  # noqa: E402
from edge.inspector import Inspector  # noqa: E402
from edge.modeldir import load_model  # noqa: E402
from edge.preprocess import list_images, read_image  # noqa: E402

STAGES = ("upload", "preprocess", "backbone", "knn", "map")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return f"CPU only: {cpu}, {os.cpu_count()} cores (torch {torch.__version__}) - NOT GPU figures"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pct(values: list[float]) -> str:
    return f"{np.percentile(values, 50):.2f} | {np.percentile(values, 99):.2f}"


def stages(a, model, frames, device) -> ResidentInspector:
    res = ResidentInspector(model, device=device)
    cpu = Inspector(model, backend="onnxruntime")
    print(f"resident: backend {res.backend.describe()}, search {res.search.name}, "
          f"JPEG {'nvJPEG on the device' if res.jpeg_on_device else 'cv2 on the host'}\n")
    rows = {}
    for name, insp in (("resident", res), ("cpu (onnxruntime)", cpu)):
        verdicts = "".join(insp.inspect(f).verdict[0] for f in frames)
        t: dict[str, list[float]] = {}
        for _ in range(a.passes):
            for f in frames:
                r = insp.inspect(f, profile=True) if insp is res else insp.inspect(f)
                t0 = time.perf_counter()
                heatmap_jpeg(insp, f, r, 320, 80)
                _sync(device)
                for k, v in dict(r.timings_ms, heatmap=(time.perf_counter() - t0) * 1e3).items():
                    t.setdefault(k, []).append(v)
        rows[name] = (verdicts, t)
    keys = ("upload", "preprocess", "backbone", "knn", "map", "heatmap")
    print("Stages, medians in ms (resident: profiled, a sync after each stage)\n")
    print("| path | verdicts | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for name, (verdicts, t) in rows.items():
        print(f"| {name} | {verdicts} | " + " | ".join(
            f"{statistics.median(t[k]):.2f}" if k in t else "-" for k in keys) + " |")
    return res


def per_frame(a, res: ResidentInspector, frames, device) -> None:
    verdict, with_heatmap = [], []
    for f in frames:  # warm-up: graph capture for this shape
        res.inspect(f)
    for _ in range(a.passes):
        for f in frames:
            t0 = time.perf_counter()
            r = res.inspect(f)
            t1 = time.perf_counter()
            heatmap_jpeg(res, f, r, 320, 80)
            t2 = time.perf_counter()
            verdict.append((t1 - t0) * 1e3)
            with_heatmap.append((t2 - t0) * 1e3)
    print(f"\nPer frame as the daemon runs it ({res.backend.describe()}), {len(verdict)} frames\n")
    print("| | p50 ms | p99 ms |\n|---|---|---|")
    print(f"| frame -> verdict | {pct(verdict)} |")
    print(f"| frame -> verdict + heatmap JPEG (320 px) | {pct(with_heatmap)} |")


def batches(a, res: ResidentInspector, frames, device) -> None:
    print("\nBatches (inspect_many, one size of frame), ms a frame (median of passes)\n")
    print("| batch | ms a frame | frames/s |\n|---|---|---|")
    for b in a.batches:
        group = [frames[i % len(frames)] for i in range(b)]
        res.inspect_many(group)
        ts = []
        for _ in range(max(3, a.passes // 5)):
            t0 = time.perf_counter()
            res.inspect_many(group)
            ts.append((time.perf_counter() - t0) / b * 1e3)
        ms = statistics.median(ts)
        print(f"| {b} | {ms:.2f} | {1e3 / ms:.0f} |")


def daemon_runs(a, device) -> None:
    from benchmarks.daemon import run

    if device.type == "cpu":  # the daemon picks the resident path only on CUDA by itself
        os.environ["PATCHCORE_RESIDENT"] = "cpu"
    print(f"\nDaemon through Mosquitto (127.0.0.1:1883), {a.daemon_seconds:.0f} s each\n")
    print("| run | backend | results/s | frame->published p50 ms | p99 ms | dropped | published | received |")
    print("|---|---|---|---|---|---|---|---|")
    runs = [("1 camera, 20 frames/s, heatmap every frame", 1, 20, None, "every"),
            (f"{a.cameras} cameras x {a.camera_fps:g} frames/s (pre-decoded), heatmap every frame", a.cameras,
             a.camera_fps, a.camera_fps, "every")]
    if a.peak_cameras:  # the daemon has no "every Nth frame" heatmap mode: one a second per camera instead
        runs.append((f"peak: {a.peak_cameras} cameras as fast as they can (pre-decoded), heatmap every 1 s",
                     a.peak_cameras, 1000, 1000, "interval"))
    for label, cams, fps, cam_fps, heat in runs:
        r = run(a.model, a.source, cams, fps, a.daemon_seconds, heatmap=heat, camera_fps=cam_fps, count_only=True)
        lat = r["latency"] or [float("nan")]
        backend = r["stats"]["cameras"]["cam0"].get("backend", "?")
        print(f"| {label} | {backend} | {r['published'] / a.daemon_seconds:.1f} | {np.percentile(lat, 50):.2f} | "
              f"{np.percentile(lat, 99):.2f} | {r['dropped']} | {r['published']} | {r['received']} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/mvtec/bottle")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--per-class", type=int, default=2, help="good and broken_large test images each")
    ap.add_argument("--passes", type=int, default=50)
    ap.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 32])
    ap.add_argument("--daemon-seconds", type=float, default=0, help="0: skip the daemon runs")
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--camera-fps", type=float, default=30)
    ap.add_argument("--peak-cameras", type=int, default=0, help="also a peak-throughput daemon run (0: skip)")
    ap.add_argument("--source", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared/data/mvtec/bottle/test/broken_large")
    a = ap.parse_args()
    device = torch.device(a.device)
    model = load_model(a.model)
    paths = list_images(a.data / "test/good")[:a.per_class] + list_images(a.data / "test/broken_large")[:a.per_class]
    frames = [read_image(p) for p in paths]
    print(f"Device: {device_name(device)}; model {model.version} ({model.geometry.describe()}, "
          f"bank {len(model.bank)} x {model.bank.shape[1]}); {len(frames)} bottle frames of "
          f"{frames[0].shape[1]}x{frames[0].shape[0]}\n")
    res = stages(a, model, frames, device)
    per_frame(a, res, frames, device)
    batches(a, res, frames, device)
    if a.daemon_seconds:
        daemon_runs(a, device)


if __name__ == "__main__":
    main()
