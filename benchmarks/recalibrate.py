"""Benchmark: recalibrate from N live frames while the camera keeps being inspected.

    .venv/bin/python benchmarks/recalibrate.py --model out/model [--frames 200] [--camera-fps 30]

Runs the daemon in-process on a camera-like source (pre-decoded bottle frames delivered at
--camera-fps), measures the inspection rate for 10 s, sends a signed recalibrate command,
and reports the time to `active` and the inspection rate while it ran.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import edge.daemon  # noqa: E402
from daemon import CameraLike  # noqa: E402
from edge.commands import encode  # noqa: E402
from edge.config import DaemonConfig  # noqa: E402
from edge.daemon import Daemon  # noqa: E402
from mqtt_collector import Collector  # noqa: E402
from edge.preprocess import list_images, read_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--camera-fps", type=float, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--nice", type=int, default=5)
    ap.add_argument("--source", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared/data/mvtec/bottle/train/good")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pc-recal-"))
    model = work / "model"
    shutil.copytree(a.model, model)
    secret = b"benchmark-secret-benchmark-secret"
    (work / "secret").write_bytes(secret)
    frames = [read_image(p) for p in list_images(a.source)]
    edge.daemon.make_source = lambda *_a, **_k: CameraLike(frames, a.camera_fps)
    prefix = f"bench-recal-{int(time.time())}"
    cfg = DaemonConfig.model_validate({
        "mqtt": {"prefix": prefix, "client_id": prefix},
        "recalibration": {"secret_file": str(work / "secret"), "threads": a.threads, "nice": a.nice},
        "cameras": [{"name": "cam", "source": "camera-like", "model": str(model), "fps": a.camera_fps,
                     "heatmap": {"mode": "off"}}]})
    sub = Collector(prefix)
    d = Daemon(cfg)
    t = threading.Thread(target=d.run)
    t.start()
    time.sleep(3)
    n0, t0 = len(sub.of("cam/result")), time.monotonic()
    time.sleep(10)
    normal = (len(sub.of("cam/result")) - n0) / (time.monotonic() - t0)
    cmd = encode({"action": "recalibrate", "id": "bench", "frames": a.frames}, secret, prefix, "cam")
    n1, t1 = len(sub.of("cam/result")), time.monotonic()
    sub.c.publish(f"{prefix}/cam/recalibrate", cmd, qos=1)
    ok = sub.wait_for(lambda: (sub.json_of("cam/recalibrate/status") or [{}])[-1].get("state") in ("active", "failed"),
                      a.timeout)
    took = time.monotonic() - t1
    during = (len(sub.of("cam/result")) - n1) / took
    status = sub.json_of("cam/recalibrate/status")[-1]
    phases = {}
    for m in sub.json_of("cam/recalibrate/status"):
        phases.setdefault(m.get("state"), m["timestamp"])
    d.request_stop()
    t.join()
    sub.close()
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nRecalibration from {a.frames} live frames (camera {a.camera_fps:.0f} frames/s, child threads "
          f"{a.threads}, nice {a.nice})\n")
    print("| outcome | time to active s | inspection rate before /s | during /s | ratio |")
    print("|---|---|---|---|---|")
    print(f"| {status['state'] if ok else 'timeout'} | {took:.1f} | {normal:.1f} | {during:.1f} | "
          f"{during / normal:.0%} |")
    print(f"\nphases (first status of each): {phases}")
    print(f"final status: {status}")


if __name__ == "__main__":
    main()
