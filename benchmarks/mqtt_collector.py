"""An MQTT subscriber that records what a station publishes, for benchmarks and tests.

Subscribes to `<prefix>/#` on a real broker and keeps (topic, payload, retain) in order; long
runs can keep counts and latencies only (count_only) or count heatmap JPEGs instead of keeping
them (keep_heatmaps=False), so a soak in the same process measures the daemon, not this.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt


def wait_until(pred, timeout: float) -> bool:
    """Poll `pred` every 50 ms until it holds (True) or `timeout` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


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
        return wait_until(pred, timeout)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()
