"""Test helpers: a real MQTT subscriber that records everything, and a daemon in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

ROOT = Path(__file__).resolve().parents[2]


class Collector:
    """Subscribes to `<prefix>/#` on a real broker and keeps (topic, payload, retain) in order."""

    def __init__(self, prefix: str, port: int = 1883, client_id: str | None = None, clean: bool = True,
                 keep_heatmaps: bool = True, count_only: bool = False):
        self.prefix, self.msgs, self.lock = prefix, [], threading.Lock()
        self.keep_heatmaps, self.heatmaps = keep_heatmaps, 0  # long runs count JPEGs instead of keeping them
        # count_only: keep just result counts and latencies, so a soak in this process measures the daemon
        self.count_only, self.counts, self.latencies = count_only, {}, []
        self.subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                             clean_session=clean)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/#", qos=1)
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._on
        self.c.reconnect_delay_set(1, 2)
        self.c.connect_async("127.0.0.1", port)
        self.c.loop_start()
        assert self.subscribed.wait(10), "test subscriber could not subscribe"

    def _on(self, c, u, m):
        with self.lock:
            if not self.keep_heatmaps and m.topic.endswith("/heatmap"):
                self.heatmaps += 1
                return
            if self.count_only:
                self.counts[m.topic] = self.counts.get(m.topic, 0) + 1
                if m.topic.endswith("/result"):
                    self.latencies.append(json.loads(m.payload)["latency_ms"])
                return
            self.msgs.append((m.topic, m.payload, m.retain))

    def of(self, suffix: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.msgs if t == f"{self.prefix}/{suffix}"]

    def json_of(self, suffix: str) -> list[dict]:
        return [json.loads(p) for p in self.of(suffix)]

    def wait_for(self, pred, timeout: float = 120.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def write_config(path: Path, prefix: str, cameras: list[dict], port: int = 1883, **extra) -> Path:
    cfg = {"mqtt": {"host": "127.0.0.1", "port": port, "prefix": prefix, "client_id": prefix},
           "stats_interval_s": 0.5, "cameras": cameras, **extra}
    path.write_text(yaml.safe_dump(cfg))
    return path


class DaemonProcess(subprocess.Popen):
    """The daemon in a subprocess, its stdout/stderr in temp files rather than pipes (a pipe
    nobody reads until the end can fill and block the daemon's logging)."""

    def __init__(self, config: Path, env: dict | None = None):
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        super().__init__([sys.executable, "-m", "patchcore_edge", "run", "--config", str(config)], cwd=ROOT,
                         stdout=self._out, stderr=self._err, text=True, env={**os.environ, **(env or {})})

    def communicate(self, input=None, timeout=None):  # noqa: A002 (Popen's signature)
        self.wait(timeout)
        return self.output()

    def stop(self, timeout: float = 30) -> tuple[str, str]:
        """SIGTERM (as systemd stops it), wait, and return what it printed (stdout, stderr)."""
        if self.poll() is None:
            self.send_signal(signal.SIGTERM)
        return self.communicate(timeout=timeout)

    def output(self) -> tuple[str, str]:
        """What the daemon printed so far (stdout, stderr)."""
        texts = []
        for f in (self._out, self._err):
            f.flush()
            f.seek(0)
            texts.append(f.read())
        return texts[0], texts[1]

    def diagnose(self) -> str:
        """Thread stacks of the daemon and its children (SIGUSR1, faulthandler) and its log tail."""
        subprocess.run(["pkill", "-USR1", "-P", str(self.pid)])
        if self.poll() is None:
            self.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        return self.output()[1][-6000:]


def start_daemon(config: Path, env: dict | None = None) -> DaemonProcess:
    return DaemonProcess(config, env)


def new_prefix() -> str:
    return f"pct-{uuid.uuid4().hex[:8]}"
