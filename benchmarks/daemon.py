"""Benchmark the edge daemon end to end through the local Mosquitto; prints markdown tables.

    .venv/bin/python benchmarks/daemon.py --model out/model [--seconds 30] [--soak 600]

1. latency: one camera replaying the bottle test images at 20 frames/s, heatmap JPEG every
   frame; frame-to-published-result latency (after decode, as the result's latency_ms) and
   per-stage medians;
2. throughput: two cameras replaying as fast as they can; combined results/s;
3. memory: RSS of this process (the daemon runs in-process) at start and end of a run of
   --soak seconds;
4. --sparkplug-rounds N: the two-camera run of 2., N times without and N times with the
   Sparkplug B output (alternating, so machine noise hits both alike): wall and thread-CPU
   time of the Sparkplug per-result hook (build metrics, encode, hand to paho), end-to-end
   latency, results/s and process CPU per result.
Every result published is also counted by a real subscriber (published == received).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import edge.daemon  # noqa: E402
from edge.capture import FrameSource  # noqa: E402
from edge.config import DaemonConfig  # noqa: E402
from edge.preprocess import list_images, read_image  # noqa: E402
from edge.daemon import Daemon  # noqa: E402
from mqtt_collector import Collector  # noqa: E402


class CameraLike(FrameSource):
    """Pre-decoded frames delivered at a camera's rate, as a USB/GigE camera hands over raw
    frames: measures the daemon, not PNG decoding (which a real camera never needs)."""

    def __init__(self, frames: list[np.ndarray], fps: float):
        self.frames, self.period, self.i, self.next = frames, 1.0 / fps, 0, 0.0

    def open(self) -> None:
        self.next = time.monotonic()

    def read(self) -> np.ndarray:
        self.next += self.period
        time.sleep(max(0.0, self.next - time.monotonic()))
        self.i += 1
        return self.frames[self.i % len(self.frames)]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(model: Path, source: Path, cameras: int, fps: float, seconds: float, heatmap: str = "every",
        camera_fps: float | None = None, count_only: bool = False, sparkplug: bool = False) -> dict:
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    cfg = DaemonConfig.model_validate({
        "mqtt": {"prefix": prefix, "client_id": prefix, "buffer": 100000}, "stats_interval_s": 1.0,
        "cameras": [{"name": f"cam{i}", "source": str(source), "model": str(model), "fps": fps, "loop": True,
                     "heatmap": {"mode": heatmap, "max_side": 320, "interval_s": 1.0}} for i in range(cameras)],
        **({"sparkplug": {"group_id": prefix, "edge_node_id": "bench"}} if sparkplug else {})})
    if camera_fps:
        frames = [read_image(p) for p in list_images(source)]
        edge.daemon.make_source = lambda *_a, **_k: CameraLike(frames, camera_fps)
    # the subscriber lives in this process: keeping every message would look like a daemon leak
    sub = Collector(prefix, keep_heatmaps=False, count_only=count_only)
    d = Daemon(cfg)
    hook_s: list[tuple[float, float]] = []  # Sparkplug per-result hook: (wall, CPU of the worker thread)
    spb = None  # counts DDATA in another process, so that receiving them is not billed to the daemon
    if sparkplug:
        spb = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-t", f"spBv1.0/{prefix}/DDATA/#", "-F", "%t"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)  # subscribed before the first result
    if sparkplug:
        def timed(fn):
            def hook(camera, result):
                t0, c0 = time.perf_counter(), time.thread_time()
                fn(camera, result)
                hook_s.append((time.perf_counter() - t0, time.thread_time() - c0))
            return hook
        for w in d.workers.values():
            w.listeners[:] = [timed(f) for f in w.listeners]
    t = threading.Thread(target=d.run)
    rss0 = rss_mb()
    cpu0 = time.process_time()
    t.start()
    samples = []  # (seconds, RSS MB) every 10% of the run
    for i in range(10):
        time.sleep(seconds / 10)
        samples.append((round((i + 1) * seconds / 10), round(rss_mb())))
    rss1 = rss_mb()
    stats = d.stats_payload()
    d.request_stop()
    t.join()
    cpu = time.process_time() - cpu0  # every thread of this process: daemon and the JSON subscriber
    time.sleep(1.0)
    if count_only:
        got = sum(sub.counts.get(f"{prefix}/cam{i}/result", 0) for i in range(cameras))
        lat = list(sub.latencies)
    else:
        got = sum(len(sub.of(f"cam{i}/result")) for i in range(cameras))
        lat = [r["latency_ms"] for i in range(cameras) for r in sub.json_of(f"cam{i}/result")]
    heatmaps = sub.heatmaps
    sub.close()
    ddata = 0
    if spb is not None:
        spb.terminate()
        ddata = len(spb.communicate()[0].splitlines())
    pub = sum(w.stats.results for w in d.workers.values())
    return {"stats": stats, "latency": lat, "received": got, "published": pub, "rss0": rss0, "rss1": rss1,
            "samples": samples, "heatmaps": heatmaps, "hook_s": hook_s, "ddata": ddata, "cpu_s": cpu,
            "seconds": seconds, "dropped": sum(w.capture.dropped for w in d.workers.values())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--source", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared/data/mvtec/bottle/test/broken_large")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--soak", type=float, default=0, help="seconds of the soak/memory run (0: skip)")
    ap.add_argument("--soak-cameras", type=int, default=4, help="cameras in the soak run")
    ap.add_argument("--soak-fps", type=float, default=10, help="frames/s each soak camera delivers")
    ap.add_argument("--skip-short", action="store_true", help="only the soak/Sparkplug runs")
    ap.add_argument("--sparkplug-rounds", type=int, default=0, help="rounds of the with/without Sparkplug runs")
    a = ap.parse_args()

    if not a.skip_short:
        short(a)
    if a.sparkplug_rounds:
        sparkplug_overhead(a)
    if a.soak:
        soak = run(a.model, a.source, a.soak_cameras, a.soak_fps, a.soak, heatmap="every", camera_fps=a.soak_fps,
                   count_only=True)
        lat = np.array(soak["latency"])
        print(f"\nSoak: {a.soak_cameras} cameras x {a.soak_fps:.0f} frames/s (pre-decoded), heatmap every frame, "
              f"{a.soak:.0f} s\n")
        print("| results/s | p50 ms | p99 ms | dropped frames | published | received |")
        print("|---|---|---|---|---|---|")
        print(f"| {soak['published'] / a.soak:.1f} | {np.percentile(lat, 50):.1f} | {np.percentile(lat, 99):.1f} | "
              f"{soak['dropped']} | {soak['published']} | {soak['received']} |")
        print("\nRSS of the whole process (MB) over the run\n")
        print("| s | " + " | ".join(str(t) for t, _ in soak["samples"]) + " |")
        print("|---|" + "---|" * len(soak["samples"]))
        print("| RSS | " + " | ".join(str(m) for _, m in soak["samples"]) + " |")
        print(f"\nheatmap JPEGs received: {soak['heatmaps']}")


def sparkplug_overhead(a) -> None:
    rows = {False: [], True: []}
    for _ in range(a.sparkplug_rounds):
        for on in (False, True):
            rows[on].append(run(a.model, a.source, 2, 1000, a.seconds, heatmap="interval", camera_fps=60,
                                sparkplug=on))
    print(f"\nSparkplug B output: two cameras x 60 raw frames/s, {a.sparkplug_rounds} alternating rounds of "
          f"{a.seconds:.0f} s each way\n")
    print("| Sparkplug | results | results/s (median of rounds) | p50 ms | p99 ms | process CPU ms/result "
          "(median of rounds) | hook wall p50 / p99 ms | hook CPU p50 / p99 ms | DDATA received |")
    print("|---|---|---|---|---|---|---|---|---|")
    for on in (False, True):
        rs = rows[on]
        lat = np.concatenate([np.array(r["latency"]) for r in rs])
        hook = np.array([h for r in rs for h in r["hook_s"]]).reshape(-1, 2) * 1e3
        hooks = (f"{np.percentile(hook[:, 0], 50):.3f} / {np.percentile(hook[:, 0], 99):.3f} | "
                 f"{np.percentile(hook[:, 1], 50):.3f} / {np.percentile(hook[:, 1], 99):.3f}") if on else "- | -"
        print(f"| {'on' if on else 'off'} | {sum(r['published'] for r in rs)} | "
              f"{np.median([r['published'] / a.seconds for r in rs]):.1f} | {np.percentile(lat, 50):.1f} | "
              f"{np.percentile(lat, 99):.1f} | {np.median([r['cpu_s'] * 1e3 / r['published'] for r in rs]):.2f} | "
              f"{hooks} | {sum(r['ddata'] for r in rs) if on else '-'} |")


def short(a) -> None:
    one = run(a.model, a.source, 1, 20, a.seconds)
    lat = np.array(one["latency"])
    stages = one["stats"]["cameras"]["cam0"]["latency_ms"]
    print(f"\nOne camera, 20 frames/s, heatmap JPEG every frame, {a.seconds:.0f} s\n")
    print("| frames | p50 ms | p99 ms | preprocess | backbone | knn | map | heatmap (after result) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {len(lat)} | {np.percentile(lat, 50):.1f} | {np.percentile(lat, 99):.1f} | "
          + " | ".join(f"{stages[k]['p50']:.1f}" for k in ("preprocess", "backbone", "knn", "map", "heatmap")) + " |")
    print(f"published {one['published']}, received {one['received']}")

    two = run(a.model, a.source, 2, 1000, a.seconds, heatmap="interval", camera_fps=60)
    print(f"\nTwo cameras, each delivering 60 raw frames/s (pre-decoded), heatmap every 1 s, {a.seconds:.0f} s\n")
    print("| results/s combined | p50 ms | p99 ms | dropped frames | published | received |")
    print("|---|---|---|---|---|---|")
    lat2 = np.array(two["latency"])
    print(f"| {two['published'] / a.seconds:.1f} | {np.percentile(lat2, 50):.1f} | {np.percentile(lat2, 99):.1f} | "
          f"{two['dropped']} | {two['published']} | {two['received']} |")


if __name__ == "__main__":
    main()
