"""What the station page costs the daemon, and how fast it loads; prints markdown tables.

    .venv/bin/python benchmarks/webpage.py --model out/model [--seconds 30] [--rounds 2]

The latency run of benchmarks/daemon.py (one camera replaying the bottle test images at
20 frames/s, heatmap JPEG every frame, frame-to-published-result latency counted by a real
subscriber), in alternating rounds (so machine noise hits all alike) with the page
- off;
- http: on, with a client making the camera page's requests at its rates (live snapshot
  4/s, health and chart 1/s, failure list and new thumbnails every 2 s): what serving one
  viewer costs the daemon itself;
- browser: on, with one headless Chromium (Debian's chromium + chromedriver) showing the
  camera page. The browser runs on this machine too, so on a small CPU its rendering
  competes with inspection; a browser on an operator's PC (the usual case) does not. Its
  processes' CPU (chromedriver's tree) is the last column.

The CPU column counts the page's server threads (the figure that survives a noisy machine).
OpenCV's worker pool is not in it: the page's resizes used to hand ~1 ms per live frame to
that pool (uncounted), the current ones do not use it. A whole-process figure is no help:
ONNX Runtime's spinning threads make it swing by hundreds of ms/s on a shared machine.

Page load: the camera page opened afresh `--loads` times with the daemon running: navigation
timing (HTML received, DOMContentLoaded, load event) and the first live frame decoded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.config import DaemonConfig  # noqa: E402
from edge.daemon import Daemon  # noqa: E402
from mqtt_collector import Collector  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        sys.exit("chromium + chromium-driver are needed (scripts/ensure-chromium installs them)")
    o = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400",
              "--disable-gpu", "--no-first-run"):
        o.add_argument(a)
    o.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=o)


class HttpWatcher(threading.Thread):
    """The requests the camera page makes, at its rates, without a browser's rendering: what
    serving one viewer costs the daemon itself."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base, self.halt, self.requests = base, threading.Event(), 0

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            self.requests += 1
            return r.read()

    def run(self) -> None:
        cam, tick, since, seen = "/api/cameras/cam0", 0, 0.0, set()
        while not self.halt.wait(0.25):  # live view at the default live_fps (4)
            self.get(f"{cam}/snapshot.jpg")
            tick += 1
            if tick % 4 == 0:  # health and chart every second
                self.get(cam)
                pts = json.loads(self.get(f"{cam}/history?since={since}"))["points"]
                since = pts[-1][0] if pts else since
            if tick % 8 == 0:  # failure strip every 2 s, new thumbnails only
                for f in json.loads(self.get(f"{cam}/failures"))["failures"]:
                    if f["id"] not in seen:
                        seen.add(f["id"])
                        self.get(f["thumb"])
            if tick % 40 == 0:
                self.get(f"{cam}/versions")


def web_cpu_s() -> float:
    """CPU seconds used so far by the page's server threads (cheroot's workers and acceptor):
    what the page takes from inspection, free of the wall-clock noise of a shared machine."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for t in threading.enumerate():
        if t.name == "web" or t.name.startswith("CP Server Thread"):
            try:
                f = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the thread ended
            total += (int(f[11]) + int(f[12])) / tick  # utime, stime
    return total


def tree_cpu_s(root: int) -> dict[int, float]:
    """CPU seconds used so far by each living process in the tree under pid `root` (chromedriver
    and the Chromium it started): what a browser on the daemon's own cores takes."""
    tick, parent = os.sysconf("SC_CLK_TCK"), {}
    cpu = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(d.name)] = int(f[1])
            cpu[int(d.name)] = (int(f[11]) + int(f[12])) / tick

    def under(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parent.get(pid, 0)
        return False
    return {p: c for p, c in cpu.items() if under(p)}


FIRST_FRAME = """const done = arguments[arguments.length - 1];
const img = document.getElementById('live');
(function poll() { if (img.naturalWidth > 0) done(performance.now()); else setTimeout(poll, 5); })();"""


def page_loads(url: str, n: int) -> dict[str, float]:
    d = browser()
    rows = []
    try:
        d.get(url)  # warm: the first start of Chromium is not the page's cost
        for _ in range(n):
            d.get("about:blank")
            d.get(url)
            first = d.execute_async_script(FIRST_FRAME)
            nav = d.execute_script("const n = performance.getEntriesByType('navigation')[0];"
                                   "return [n.responseEnd, n.domContentLoadedEventEnd, n.loadEventEnd];")
            rows.append([*nav, first])
    finally:
        d.quit()
    cols = ("HTML received", "DOMContentLoaded", "load event", "first live frame shown")
    return {c: statistics.median(r[i] for r in rows) for i, c in enumerate(cols)}


def run(model: Path, source: Path, seconds: float, web: str, loads: int = 0) -> dict:
    """web: "off", "browser" (one headless Chromium on the camera page) or "http" (HttpWatcher)."""
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    port = free_port()
    state = tempfile.mkdtemp(prefix="bench-state-")  # each run its own (a state dir is locked per daemon)
    cfg = DaemonConfig.model_validate({
        "mqtt": {"prefix": prefix, "client_id": prefix, "buffer": 100000}, "stats_interval_s": 1.0,
        "cameras": [{"name": "cam0", "source": str(source), "model": str(model), "fps": 20, "loop": True,
                     "heatmap": {"mode": "every", "max_side": 320}}],
        "web": {"enabled": web != "off", "port": port},
        **({"state_dir": state} if "state_dir" in DaemonConfig.model_fields else {})})
    sub = Collector(prefix, keep_heatmaps=False, count_only=True)
    d = Daemon(cfg)
    t = threading.Thread(target=d.run)
    t.start()
    watcher, load = None, {}
    try:
        time.sleep(2.0)  # model warm-up is not what is compared
        url = f"http://127.0.0.1:{port}/camera/cam0"
        if web != "off" and loads:
            load = page_loads(url, loads)
        if web == "browser":
            watcher = browser()
            watcher.get(url)
        elif web == "http":
            watcher = HttpWatcher(f"http://127.0.0.1:{port}")
            watcher.start()
        driver = watcher.service.process.pid if web == "browser" else None
        b0 = tree_cpu_s(driver) if driver else {}
        n0, cpu0 = len(sub.latencies), web_cpu_s()
        time.sleep(seconds)
        lat = list(sub.latencies)[n0:]
        cpu = (web_cpu_s() - cpu0) / seconds
        browser_cpu = sum(c - b0.get(p, 0.0) for p, c in tree_cpu_s(driver).items()) / seconds if driver else None
    finally:
        if isinstance(watcher, HttpWatcher):
            watcher.halt.set()
            watcher.join()
        elif watcher is not None:
            watcher.quit()
        d.request_stop()
        t.join()
        sub.close()
        shutil.rmtree(state, ignore_errors=True)
    return {"latency": lat, "load": load, "web_cpu": cpu, "browser_cpu": browser_cpu}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--source", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared/data/mvtec/bottle/test/broken_large")
    ap.add_argument("--seconds", type=float, default=30, help="measured seconds of each run")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each mode")
    ap.add_argument("--loads", type=int, default=5, help="page loads timed (first browser round)")
    ap.add_argument("--modes", default="off,http,browser", help="comma list of off, http, browser")
    a = ap.parse_args()
    modes = a.modes.split(",")
    rows = {m: [] for m in modes}
    cpu = {m: [] for m in modes}
    bcpu = {m: [] for m in modes}
    load = {}
    for i in range(a.rounds):
        for m in modes:
            r = run(a.model, a.source, a.seconds, m, loads=a.loads if m == "browser" and i == 0 else 0)
            rows[m].append(r["latency"])
            cpu[m].append(r["web_cpu"])
            if r["browser_cpu"] is not None:
                bcpu[m].append(r["browser_cpu"])
            load = load or r["load"]
    names = {"off": "off", "http": "on, one viewer's requests (no browser)", "browser": "on, one Chromium watching"}
    print(f"\nOne camera, 20 frames/s, heatmap JPEG every frame; {a.rounds} alternating rounds of {a.seconds:.0f} s\n")
    print("| page | results | p50 ms | p99 ms | p50 per round | page threads' CPU ms per s (per round) "
          "| browser CPU ms per s |")
    print("|---|---|---|---|---|---|---|")
    for m in modes:
        lat = np.concatenate([np.array(x) for x in rows[m]])
        per = ", ".join(f"{np.percentile(x, 50):.1f}" for x in rows[m])
        print(f"| {names[m]} | {len(lat)} | {np.percentile(lat, 50):.1f} | {np.percentile(lat, 99):.1f} | {per} | "
              f"{np.median(cpu[m]) * 1e3:.1f} ({', '.join(f'{c * 1e3:.1f}' for c in cpu[m])}) | "
              f"{f'{np.median(bcpu[m]) * 1e3:.0f}' if bcpu[m] else '–'} |")
    if load:
        print(f"\nCamera page load on localhost (median of {a.loads}, ms from navigation start)\n")
        print("| " + " | ".join(load) + " |")
        print("|" + "---|" * len(load))
        print("| " + " | ".join(f"{v:.0f}" for v in load.values()) + " |")


if __name__ == "__main__":
    main()
